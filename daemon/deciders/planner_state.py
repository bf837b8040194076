"""The planner's decisions, as pure logic: product events in, messages out.

No Kafka here (daemon/doers/planner_loop.py does the I/O), so every decision can be
tested from events alone. Everything the planner knows can be rebuilt from
the topics: the exposures from the product events, what was already ordered
from the work-order topic, the holds from the holds topic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from calstream.daemon.deciders import direct_image_holds as wfss_holds
from calstream.daemon.deciders import planner_summary
from calstream.daemon.deciders.bulkhead import decide_each
from calstream.daemon.deciders.companion_index import CompanionIndex
from calstream.daemon.deciders.holds import (
    WaitingUpdates,
    already_applied,
    hold_or_release,
    reject_update,
    rejection_id,
    release_by_update,
    release_record,
    release_without_product,
    update_problem,
)
from calstream.daemon.deciders.level2_orders import members_of, order_identity, stage2_order
from calstream.daemon.deciders.level3_members import stage2_event_problem
from calstream.daemon.deciders.level3_state import Level3State
from calstream.daemon.deciders.planner_records import (
    Candidate,
    Emit,
    OpenCandidates,
    Seen,
    redelivered,
    routed_exposure,
)
from calstream.daemon.deciders.visit_counts import VisitCounts
from calstream.steps.associations import (
    AssociationError,
    Level3Product,
    MissingCompanions,
    NamingError,
    build_level2,
    companion_kind,
)
from calstream.steps.associations.records import Exposure
from calstream.steps.routing import RoutingError, route
from calstream.steps.step_parameters import StepParameters
from calstream.topics import contract
from calstream.topics.dead_letters import letter_fields

log = logging.getLogger("calstream.planner")


class PlannerState:
    def __init__(self, *, companion_wait: float, level3_settle: float = 0.0,
                 level3_quiet_period: float = 3600.0, namespace: str = "live",
                 holds: dict[str, dict[str, Any]] | None = None,
                 step_parameters: StepParameters | None = None,
                 level3_stage2_wait: float | None = None):  # None: the quiet period
        self.companion_wait = companion_wait
        self.step_parameters = step_parameters  # configured; orders carry them
        self.namespace = namespace
        # A reprocessing namespace's orders carry its replay (context, priority).
        self.replay: dict[str, Any] | None = None
        self.stage3 = Level3State(settle=level3_settle, quiet_period=level3_quiet_period,
                                  namespace=namespace, step_parameters=step_parameters,
                                  stage2_wait=level3_stage2_wait)
        self.exposures: dict[str, Seen] = {}
        self.candidates: dict[str, Candidate] = {}
        self.open_candidates = OpenCandidates()  # what tick and status read
        self.ordered: dict[str, str] = {}  # work id -> product name, from the work-order topic
        # exposure id -> last hold record; shared by every namespace: a hold is
        # on an exposure's content, wherever it is reprocessed.
        self.holds: dict[str, dict[str, Any]] = {} if holds is None else holds
        self.rejected: set[tuple[str, str]] = set()  # (exposure id, digest) dead-lettered
        self.level3: dict[str, tuple[Level3Product, dict[str, dict]]] = {}  # name -> (record, outputs)
        # Companions by the keys they share with their science: every decision
        # looks at a bucket, never at a whole program (deciders/companion_index.py).
        self.index = CompanionIndex()
        self.visits = VisitCounts()  # NEXPOSUR's count, per visit and detector

    def _companions(self, cand: Candidate, sci: Seen) -> list[Seen | tuple]:
        """The records that may be ``cand``'s companions (exposures and level-3
        products), sorted: what a scan of the program would find."""
        records = (self.exposures.get(key) or self.level3.get(key)
                   for key in sorted(self.index.companions_of(sci.exposure, cand.route.needs)))
        return [record for record in records if record is not None]

    # -- restoring ---------------------------------------------------------
    def restore_order(self, order: contract.Message) -> None:
        if order["stage"] == "stage3":
            self.stage3.restore_order(order)
            return
        if order["work_id"] not in self.ordered:  # read twice, counted once
            self.stage3.stage2_ordered(order["product_name"])  # in flight until its product
        self.ordered[order["work_id"]] = order["product_name"]

    def observe_stage2_failure(self, work_id: str, exposure_id: str, reason: str,
                               now: float, *, failure_key: str | None = None,
                               redrives: tuple[str, ...] = ()) -> list[Emit]:
        """A dead letter of a stage-2 order (deciders/stage2_failures.py),
        with the redrives marked on its record: counted only for an order of
        this namespace it sent, for that exposure. ``failure_key``: which
        failure it is (Stage2Failure.failed_record): counted once."""
        if self.ordered.get(work_id) != exposure_id:
            return []
        return self._stage3(self.stage3.stage2_failed(exposure_id, failure_key or work_id, reason,
                                                      now, redrives))

    def restore_product(self, event: dict[str, Any]) -> None:
        """A product found in the product store at start: what the broker's
        work topics may have lost (stage-3 versions) comes back from it."""
        self.stage3.restore_product(event)

    def load_plan(self, plan, now: float) -> list[Emit]:
        return self._stage3(self.stage3.load_plan(plan, now))

    def _stage3(self, orders: list[contract.Message]) -> list[Emit]:
        return [Emit("work.stage3", o["product_name"], self._as_namespace(o)) for o in orders]

    def _as_namespace(self, order: contract.Message) -> contract.Message:
        if self.replay is None:
            return order
        body = dict(order.body, priority="replay", namespace=self.namespace,
                    crds_context=self.replay.get("crds_context"), replay=self.replay)
        return contract.Message(order.type, body)

    def restore_hold(self, hold: contract.Message) -> None:
        self.holds[hold["exposure_id"]] = hold.body

    # -- events --------------------------------------------------------------
    def observe(self, event: contract.Message, now: float) -> list[Emit]:
        """A product event; returns what to publish."""
        body = event.body  # read directly: a fresh event reads a dozen fields
        if body["outcome"] != "success":
            return []
        if body.get("replay") and self.replay is None:
            self.replay = dict(body["replay"])
        stage = body["stage"]
        if stage == "stage3":
            self.stage3.restore_product(body)  # its version is taken
            return self._observe_level3(event, now)
        if stage == "stage2":  # held to its detector1 event's header (level3_members.py)
            problem = stage2_event_problem(body, self.exposures)
            return [self._dead_letter(event, problem)] if problem \
                else self._stage3(self.stage3.observe_stage2(body, now))
        if stage != "detector1":
            return []
        exposure_id = body["exposure_id"]
        previous = self.exposures.get(exposure_id)
        if previous is not None and redelivered(previous.event, body):
            # The same product again (a redelivery, a re-read): nothing about
            # the exposure changed, only time, so only what time can decide.
            return self._reconsider(previous, now, settled_too=False)
        digest = body["inputs"][0]["digest"] if body["inputs"] else ""
        header = body["header"]
        try:
            r = route(header)
        except RoutingError as exc:
            if (exposure_id, digest) in self.rejected:
                return []
            self.rejected.add((exposure_id, digest))
            return [self._dead_letter(event, f"cannot route {exposure_id}: {exc}")]
        outputs = body["outputs"]
        seen = Seen(routed_exposure(exposure_id, header, {o["suffix"]: o["path"] for o in outputs}, r),
                    {o["path"]: o for o in outputs}, body,
                    contract.parse_time(body["emitted_at"]).timestamp())
        if previous is not None and previous.event["work_id"] == body["work_id"]:
            seen.since = previous.since  # a re-emitted event: the wait started at the first
        kept = wfss_holds.pointing_release_of(self.holds.get(exposure_id))
        if kept and self.holds[exposure_id]["digest"] == seen.digest \
                and kept["path"] != "redelivery":
            seen.release = kept  # a release made before a restart still holds
        self.exposures[exposure_id] = seen
        self.index.add_exposure(seen.exposure)
        self.visits.arrived(seen.exposure, exposure_id, header_changed=previous is not None
                            and previous.exposure.header != header)
        out: list[Emit] = []
        out += hold_or_release(seen, self.holds)
        if r.stage2 is not None:
            cand = self.candidates.get(exposure_id)
            if cand is None:
                self.open_candidates.add(self.candidates.setdefault(exposure_id, Candidate(
                    exposure_id, r, seen.since, number=len(self.candidates))))
            else:
                cand.route = r
            if r.needs:  # a science that takes no companions is in no bucket
                self.index.add_science(seen.exposure, r.needs)
        # The new exposure may complete any candidate of its visit.
        return out + self._reconsider(seen, now)

    def observe_pointing(self, update: contract.Message, now: float) -> list[Emit]:
        """A pointing correction or an operator's release for a held exposure."""
        if already_applied(update, self.holds):
            # Read again after a restart. Its release is in the hold record
            # (the ledger's, restored), but an exposure restored from a
            # snapshot taken before the update was applied is still held
            # there: it takes the release, as another namespace would.
            applied = wfss_holds.pointing_release_of(self.holds[update["exposure_id"]])
            return self.adopt_release(update["exposure_id"], applied, now) if applied else []
        seen = self.exposures.get(update["exposure_id"])
        if seen is None and (cleared := release_without_product(update, self.holds)):
            return [cleared]
        problem = update_problem(update, seen)
        if problem:
            return [reject_update(update, problem)]
        release = seen.release = release_by_update(update, seen)
        return [release_record(seen, release, self.holds)] + self._reconsider(seen, now)

    def adopt_release(self, exposure_id: str, release: dict[str, Any],
                      now: float) -> list[Emit]:
        """Another namespace released this content: it is released here too
        (the hold record is shared and already published)."""
        seen = self.exposures.get(exposure_id)
        if seen is None or not seen.provisional or seen.digest != release.get("digest"):
            return []
        seen.release = release
        return self._reconsider(seen, now)

    def _reconsider(self, seen: Seen, now: float, *, settled_too: bool = True) -> list[Emit]:
        """An exposure arrived or was released: the level-2 and level-3
        associations it may complete. ``settled_too=False``: its content did
        not change, so an association already ordered complete stays as it is."""
        out = decide_each([c for c in self._affected(seen)
                           if settled_too or c.sent is None or not c.sent_complete],
                          lambda c: self._evaluate(c, now))
        return out + self._stage3(self.stage3.observe_arrival(
            seen.exposure, since=seen.since, provisional=seen.provisional, now=now))

    def _observe_level3(self, event: contract.Message, now: float) -> list[Emit]:
        """A stage-3 product, e.g. a WFSS direct image's i2d + cat + segm, which
        WFSS stage 2 waits for."""
        header = event.get("header") or {}
        if not header:
            return []
        product = Level3Product(event["product_name"], header,
                                {o["suffix"]: o["path"] for o in event["outputs"]})
        self.level3[event["product_name"]] = (product, {o["path"]: o for o in event["outputs"]})
        self.index.add_product(product)
        def waiting_for_it(science: str) -> Candidate | None:
            cand, sci = self.candidates.get(science), self.exposures.get(science)
            if cand and sci and companion_kind(cand.route, sci.exposure, product):
                return cand
            return None

        return decide_each(filter(None, map(waiting_for_it,
                                            sorted(self.index.sciences_for_product(product)))),
                           lambda c: self._evaluate(c, now))

    def tick(self, now: float) -> list[Emit]:
        """Time passes: companions that never came stop blocking."""
        out = decide_each(self.open_candidates.waiting(), lambda c: self._evaluate(c, now))
        return out + self._stage3(self.stage3.tick(now))

    # -- decisions ------------------------------------------------------------
    def _affected(self, seen: Seen) -> list[Candidate]:
        """Its own association, those it may be a companion of, its visit's degraded ones."""
        own = self.candidates.get(seen.exposure.exposure_id)
        result = [own] if own is not None else []
        for science in sorted(self.index.sciences_for_exposure(seen.exposure)):
            cand, sci = self.candidates.get(science), self.exposures.get(science)
            if cand is None or cand is own or sci is None:
                continue
            if companion_kind(cand.route, sci.exposure, seen.exposure):
                result.append(cand)
        return result + self.open_candidates.degraded_in(  # their visit's count grew
            seen.exposure.name, {c.science for c in result})

    def _visit_complete(self, sci: Seen) -> bool:
        """Every exposure NEXPOSUR promises for this visit and detector has
        arrived, each with all its segments (visit_counts.py)."""
        return self.visits.complete(sci.exposure, self._arrived_exposure)

    def _arrived_exposure(self, exposure_id: str) -> Exposure | None:
        seen = self.exposures.get(exposure_id)
        return seen.exposure if seen is not None else None

    def _evaluate(self, cand: Candidate, now: float) -> list[Emit]:
        sci = self.exposures[cand.science]
        # A route that takes no companions (imaging, most spectra) has none to look for.
        pool = self._companions(cand, sci) if cand.route.needs else []
        members = members_of(cand, sci, pool) if pool else [sci]
        held = [m for m in members if m.provisional]
        if held:
            cand.waiting_for = {"pointing": ", ".join(
                f"{m.exposure.exposure_id} has ENGQLPTG=PLANNED" for m in held)}
            return []
        others = [s.exposure for s in pool if isinstance(s, Seen) and not s.provisional]
        others += [r[0] for r in pool if not isinstance(r, Seen)]
        complete = self._visit_complete(sci)
        waited = now - cand.since
        try:
            asn = build_level2(cand.route, sci.exposure, others, visit_complete=complete)
            is_complete = True
        except MissingCompanions as missing:
            cand.waiting_for = dict(missing.missing)
            if waited < self.companion_wait or cand.sent is not None:
                return []
            hold = wfss_holds.hold_for_direct_image(sci, cand.waiting_for, self.companion_wait,
                                                    self.holds, now, live=self.namespace == "live")
            if hold is not None:
                return hold  # jwst refuses a WFSS spec2 without it: held, not degraded
            asn = build_level2(cand.route, sci.exposure, others, visit_complete=complete,
                               allow_degraded=True)
            is_complete = False
        except (AssociationError, NamingError) as exc:
            cand.waiting_for = {"association": str(exc)}
            return []
        cand.waiting_for = {}
        wid, inputs, paths = order_identity(cand, asn, members, pool, self.namespace)
        released = wfss_holds.release_direct_image_hold(sci, asn, self.holds,
                                                        live=self.namespace == "live")
        if wid == cand.sent or wid in self.ordered:
            self.open_candidates.sent(cand, wid, is_complete)
            return released
        if cand.sent is not None and not is_complete:
            return []  # never replace an order with a less complete one
        # Neither the association nor the message is checked here: an order
        # already sent is recognised by its id above, and the publisher's
        # encoding checks the schema of one about to be sent;
        # tests/unit/test_planner_outputs.py and test_planner_decisions.py
        # check every kind the planner makes (schemas, jwst's rules).
        self.open_candidates.sent(cand, wid, is_complete)
        self.ordered[wid] = cand.science
        self.stage3.stage2_ordered(cand.science)  # in flight until its product
        return released + [Emit("work.stage2", cand.science, self._as_namespace(stage2_order(
            cand, sci, asn, members, wid, inputs, paths, degraded=not is_complete,
            namespace=self.namespace, step_parameters=self.step_parameters)))]

    def _dead_letter(self, event: contract.Message, reason: str) -> Emit:
        first = event["inputs"][0] if event["inputs"] else {}  # texts bounded: letter_fields
        message = contract.build(  # its record (``original``): planner_loop._send adds it
            "dead_letter", contract.event_id("dead_letter", "planner", event.event_id),
            **letter_fields(category="bad_input", reason=reason, stage="planner", attempts=0,
                            original=None, exposure_id=event.get("exposure_id"),
                            path=first.get("path"), digest=first.get("digest")))
        return Emit("deadletter", event.get("exposure_id") or "", message)

    # -- for metrics and status ---------------------------------------------
    def summary(self, now: float, limit: int | None = None) -> dict[str, Any]:
        """Counts, and the first ``limit`` of each list (planner_summary.py)."""
        return planner_summary.summary(self, now, limit)


def observe_pointing_everywhere(states: Iterable[PlannerState], update: contract.Message,
                                now: float, waiting: WaitingUpdates | None = None) -> list[Emit]:
    """A pointing update for every namespace at once.

    A hold is on an exposure's content wherever it is reprocessed, so its
    release is too: a replay that caught an exposure while it was held must
    go on when the correction comes. The first state that has seen the
    exposure (the live one first) judges the update and publishes the
    release; the others adopt it.
    """
    states = list(states)
    exposure_id = update["exposure_id"]
    owner = next((s for s in states if exposure_id in s.exposures), None)
    known = owner is not None
    owner = owner or states[0]
    out = owner.observe_pointing(update, now)
    if not known and waiting is not None and any(
            e.message.event_id == rejection_id(update) for e in out):
        waiting.keep(update)  # its product may come yet: pointing_on_arrival
    release = (owner.holds.get(exposure_id) or {}).get("release") or {}
    if release.get("update_event_id") == update.event_id:
        for state in states:
            if state is not owner:
                out += state.adopt_release(exposure_id, release, now)
    return out


def pointing_on_arrival(states: Iterable[PlannerState], exposure_id: str, now: float,
                        waiting: WaitingUpdates) -> list[Emit]:
    """An exposure's detector1 product was decided: the pointing updates
    that came before it (WaitingUpdates) applied now, as a rebuild, which
    reads them after every product, applies them. One that cannot release
    it (the product is not held, another content) sends nothing: its dead
    letter was sent when it came. A product event that decides no exposure
    (skipped: no science data; one that cannot be routed) leaves them
    waiting: judged now, against an exposure still unknown, they were lost,
    and its calibrated redelivery stayed held while a rebuild released it."""
    states = list(states)
    if not any(exposure_id in s.exposures for s in states):
        return []
    out: list[Emit] = []
    for update in waiting.take(exposure_id):
        sent_before = rejection_id(update)
        out += [e for e in observe_pointing_everywhere(states, update, now)
                if e.message.event_id != sent_before]
    return out
