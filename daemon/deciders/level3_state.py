"""Stage-3 planning, as pure logic: when a level-3 candidate is complete.

A candidate (``steps.associations.level3.candidate_key``: program, acid,
instrument, optical path, target, ...) gathers every exposure that belongs to
it. It *closes* -- a stage-3 work order is sent -- when:

* a **plan** (a loaded pool or manifest) lists the candidate's exposures:
  the moment the last planned member has its stage-2 product, no waiting;
* **headers** say every visit the members come from is complete
  (NEXPOSUR x EXSEGTOT per expected detector, ``steps.completeness``) and no
  plan covers it: after ``settle`` seconds without a new member, since a
  later visit of the observation may still come;
* otherwise after ``quiet_period`` seconds without a new member, marked
  degraded, naming what never came -- or, while a member's stage-2 order
  was sent and its product has not come (*in flight*: a stage-2 backlog,
  not a loss), after ``stage2_wait`` seconds, naming those members. A
  member whose every stage-2 order was dead-lettered is not in flight: the
  quiet period applies, and the close names its failure.

A candidate none of whose members has a stage-2 product orders nothing when
it would close: it is *abandoned* (no longer open, listed with its reason)
until a member arrives or a stage-2 product comes.

A candidate never closes while a member is held (ENGQLPTG=PLANNED): the
held exposure must not be left out silently, nor enter the product.

A member that arrives after its candidate closed re-opens it; the next close
issues version N+1, which ``supersedes`` the product event of version N (the
files go to their own directory, so nothing a subscriber may be reading is
overwritten). Orders are identified by their inputs, so a rebuild from the
topics recognises every order already sent and sends none twice; time-based
decisions during a rebuild use the events' own times, so they replay as they
were first made.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, insort
from typing import Any

from calstream.daemon.deciders.bulkhead import decide_each
from calstream.daemon.deciders.level3_candidates import (
    Arrived,
    Calibrated,
    Candidate,
    Sent,
    keys_of,
)
from calstream.daemon.deciders.level3_membership import Level3Membership
from calstream.daemon.deciders.level3_orders import order_work_id, previous_versions, stage3_order
from calstream.daemon.deciders.level3_status import named_briefly, summary
from calstream.daemon.deciders.stage2_failures import MAX_REDRIVES
from calstream.steps.associations import (
    AssociationError,
    AssociationInvalid,
    Exposure,
    Level3Key,
    NamingError,
    build_level3,
    product_name,
    validate_level3,
)
from calstream.steps.plans import Plan
from calstream.steps.step_parameters import StepParameters
from calstream.steps.visit_tally import VisitTally
from calstream.topics import contract

log = logging.getLogger("calstream.planner")


class Level3State(Level3Membership):
    def __init__(self, *, settle: float, quiet_period: float, namespace: str = "live",
                 step_parameters: StepParameters | None = None,
                 stage2_wait: float | None = None):
        self.step_parameters = step_parameters  # configured; orders carry them
        self.settle = settle
        self.quiet_period = quiet_period
        # How long a member in flight keeps its candidate waiting (never
        # shorter than the quiet period).
        self.stage2_wait = max(quiet_period, stage2_wait or 0.0)
        # exposure -> how many stage-2 orders of it were sent (by this
        # planner, or read from the work topic): PlannerState.ordered counted.
        self._stage2_sent: dict[str, int] = {}
        # exposure -> {dead letter's event id: reason} of its stage-2 orders
        # dead-lettered (deciders/stage2_failures.py), and the redrives of
        # them (their marks); in flight while orders and redrives outnumber
        # the failures.
        self._stage2_failed: dict[str, dict[str, str]] = {}
        self._stage2_redriven: dict[str, set[str]] = {}
        self.namespace = namespace
        self.arrived: dict[str, Arrived] = {}
        self.calibrated: dict[str, Calibrated] = {}
        self.candidates: dict[Level3Key, Candidate] = {}
        self.plans: dict[str, Plan] = {}
        self._planned: dict[str, tuple[str, ...]] = {}  # exposure id -> plan acids
        self._plan_headers: dict[str, dict[str, Any]] = {}  # exposure id -> plan keywords
        self._planned_keys: dict[Level3Key, set[str]] = {}  # candidate -> planned exposure ids
        self._restored: dict[str, list[dict[str, Any]]] = {}  # product name -> orders
        # Kept as exposures arrive, so no decision reads a whole visit or program:
        self._visit_members: dict[str, set[str]] = {}  # visit id -> arrived exposure ids
        self._visits: dict[str, VisitTally] = {}  # visit id -> its completeness, when asked
        self._keys_by_visit: dict[str, set[Level3Key]] = {}  # visit -> candidates in it
        self._keys_of_member: dict[str, set[Level3Key]] = {}  # exposure -> its candidates
        self._keys_cache: dict[str, tuple] = {}  # exposure id -> (header, acids, keys)
        self._incomplete_set: set[str] = set()  # visits whose headers say more will come
        self._unsettled_visits: set[str] = set()  # visits with arrivals not counted yet
        # candidate -> tuple(cand.digests), dropped when they change: a
        # candidate of a thousand members is not copied at every event.
        self._signatures: dict[Level3Key, tuple] = {}

    # -- inputs ----------------------------------------------------------------
    def restore_order(self, order: contract.Message) -> None:
        self._remember(order["product_name"], order.body)

    def restore_product(self, event: dict[str, Any]) -> None:
        """A stage-3 product (from the product store or the products topic):
        its order was sent, whether or not the broker still holds the order.
        The order's identity is rebuilt from the product's inputs, so a
        broker that lost ``work.stage3`` (the embedded one keeps it in
        memory) still continues the versions: v2 after v1, never v1 again."""
        if event.get("stage") != "stage3" or not event.get("product_name"):
            return
        self._remember(event["product_name"], {
            "work_id": order_work_id(event["pipeline"], self.namespace, event.get("inputs") or []),
            "version": event.get("version") or 1, "degraded": event.get("degraded")})

    def _remember(self, name: str, order: dict[str, Any]) -> None:
        orders = self._restored.setdefault(name, [])
        if all(o["work_id"] != order["work_id"] for o in orders):
            orders.append(order)

    def restored_order_count(self) -> int:
        """How many stage-3 orders were restored (work topics, product store)."""
        return sum(len(orders) for orders in self._restored.values())

    def stage2_ordered(self, eid: str) -> None:
        """A new stage-2 order of ``eid`` was sent: until its product comes it is in flight."""
        self._stage2_sent[eid] = self._stage2_sent.get(eid, 0) + 1
        if self._in_flight(eid):
            for key in self._keys_of_member.get(eid, ()):
                cand = self.candidates[key]
                if eid in cand.uncalibrated:
                    cand.in_flight.add(eid)

    def _in_flight(self, eid: str) -> bool:
        """An order of ``eid`` was sent (or redriven) and not every one was
        dead-lettered. Counted, not ordered in time: a rebuild knows every
        order first and the dead letters after, and decides the same."""
        return self._stage2_sent.get(eid, 0) + len(self._stage2_redriven.get(eid, ())) > \
            len(self._stage2_failed.get(eid, ()))

    def stage2_failed(self, eid: str, failure_key: str, reason: str, now: float,
                      redrives: tuple[str, ...] = ()) -> list[contract.Message]:
        """A stage-2 order of ``eid`` this planner sent was dead-lettered (the
        failure ``failure_key``, its record's place): its candidates stop waiting for it beyond the
        quiet period; ``redrives`` (that letter's marks) put it in flight
        again, until the redriven record's own dead letter comes."""
        was = self._in_flight(eid)
        self._stage2_failed.setdefault(eid, {}).setdefault(failure_key, reason)
        if redrives:
            marks = self._stage2_redriven.setdefault(eid, set())
            for mark in redrives:
                if len(marks) < MAX_REDRIVES:
                    marks.add(mark)
        if self._in_flight(eid) == was:
            return []
        if not was:  # redriven: in flight again, as a new order is
            for key in self._keys_of_member.get(eid, ()):
                if eid in self.candidates[key].uncalibrated:
                    self.candidates[key].in_flight.add(eid)
            return []
        touched = set()
        for key in self._keys_of_member.get(eid, ()):
            if eid in self.candidates[key].in_flight:
                self.candidates[key].in_flight.discard(eid)
                touched.add(key)
        return self._evaluate_all(touched, now)

    def load_plan(self, plan: Plan, now: float) -> list[contract.Message]:
        if plan.plan_id in self.plans:
            return []
        self.plans[plan.plan_id] = plan
        touched: set[Level3Key] = set()
        for p in plan.exposures:
            self._plan_headers[p.exposure_id] = dict(p.header)
            self._planned[p.exposure_id] = tuple(
                sorted(set(self._planned.get(p.exposure_id, ())) | set(p.candidates)))
            for key, r in keys_of(Exposure(p.exposure_id, p.header), p.candidates):
                if key.acid not in p.candidates and key.acid != f"o{p.name.observation}":
                    continue
                self._planned_keys.setdefault(key, set()).add(p.exposure_id)
                touched.add(key)
                if key not in self.candidates and r.role == "science":
                    self._new_candidate(key, r, now)
        # Exposures already seen may belong to the plan's c-candidates.
        for a in list(self.arrived.values()):
            if a.exposure.exposure_id in self._planned:
                self._index(a.exposure, now)
        out: list[contract.Message] = []
        for key in touched:
            if key in self.candidates:
                out += self._evaluate(self.candidates[key], now)
        return out

    def observe_arrival(self, exposure: Exposure, *, since: float, provisional: bool,
                        now: float) -> list[contract.Message]:
        """A detector1 product (or a change of its hold): one more exposure seen."""
        eid = exposure.exposure_id
        previous = self.arrived.get(eid)
        self._arrive(Arrived(exposure, since, provisional))
        touched = self._index(exposure, since if previous is None else now)
        for key in self._keys_of_member.get(eid, ()) if previous else ():
            (set.add if provisional else set.discard)(self.candidates[key].held, eid)
        if previous is not None:
            if previous.provisional == provisional and previous.since == since:
                touched = set()  # the same event again
            for key in touched:
                # Released or redelivered: its stage 2 starts now, so the
                # quiet period does too.
                self.candidates[key].changed = max(self.candidates[key].changed, now)
        # Completeness is per visit: an exposure of another candidate may
        # complete this one's visit.
        touched |= self._keys_by_visit.get(exposure.name.visit_id, set())
        return self._evaluate_all(touched, now)

    def observe_stage2(self, event: dict[str, Any], now: float) -> list[contract.Message]:
        eid = event.get("exposure_id")
        if not eid or not event.get("header"):
            return []
        products = {o["suffix"]: o["path"] for o in event["outputs"]}
        exposure = Exposure(eid, event["header"], products)
        previous = self.calibrated.get(eid)
        since = contract.parse_time(event["emitted_at"]).timestamp()
        self.calibrated[eid] = Calibrated(exposure, {o["path"]: o for o in event["outputs"]},
                                          event, since)
        if eid not in self.arrived:
            # Stage 2 replayed into a namespace without its detector1 events:
            # the stage-2 event's header stands for the arrival.
            self._arrive(Arrived(Exposure(eid, event["header"]), since, False))
        touched = self._index(exposure, now)
        new_outputs = previous is None or previous.outputs != self.calibrated[eid].outputs
        old = self._stage2_digests(eid, previous) if previous is not None else []
        for key in self._keys_of_member.get(eid, ()):
            cand = self.candidates[key]
            cand.uncalibrated.discard(eid)
            cand.in_flight.discard(eid)
            if new_outputs:
                self._signatures.pop(key, None)
                for digest in old:
                    del cand.digests[bisect_left(cand.digests, digest)]
                for digest in self._stage2_digests(eid):
                    insort(cand.digests, digest)
        changed = previous is None or previous.event["work_id"] != event["work_id"]
        for key in touched:
            if changed:
                self.candidates[key].changed = max(self.candidates[key].changed, now)
        return self._evaluate_all(touched, now)

    def tick(self, now: float) -> list[contract.Message]:
        return self._evaluate_all({k for k, c in self.candidates.items() if c.is_open}, now, True)

    # -- decisions ---------------------------------------------------------------
    def _evaluate_all(self, keys: set[Level3Key], now: float, ticked: bool = False):
        cands = [self.candidates[k] for k in (sorted(keys, key=repr) if len(keys) > 1 else keys)]
        return decide_each(cands, lambda c: self._evaluate(c, now, ticked))

    def _evaluate(self, cand: Candidate, now: float, ticked: bool = False):  # ticked: time only
        if cand.product_name is None and cand.members:
            # The name operations know it by, before the first order names it.
            cand.product_name = product_name(
                cand.key, [self._with_plan(self.arrived[m].exposure)
                           for m in sorted(cand.members) if m in self.arrived],
                self._program_pool(cand.key.program))
        # Decided from the kept sets and counts; the words come when read.
        held = bool(cand.held)
        pending = any(m not in cand.held for m in cand.uncalibrated) if held \
            else bool(cand.uncalibrated)
        planned = self._planned_keys.get(cand.key)
        cand.expected_by = "plan" if planned else "headers"
        # Would level3_status.missing name anything? Asked only when nothing
        # else keeps it waiting, from the kept counts.
        waiting = held or pending or (any(e not in self.arrived for e in planned) if planned
                                      else not cand.visits.isdisjoint(self._incomplete_visits))
        cand.described_later(waiting, changed=not ticked)
        if not waiting:
            signature = cand.signature = self._signature(cand)
            if cand.sent and cand.sent[-1].signature == signature:
                return []
        cand.abandoned = None  # decided again below, if it still would close
        if held:
            return []  # never close around a held exposure
        quiet = now - cand.changed
        if not waiting:
            if cand.expected_by != "plan" and quiet < self.settle:
                return []
            degraded = None
        else:
            # A member in flight is a stage-2 backlog: waited for longer.
            if quiet < (self.stage2_wait if cand.in_flight else self.quiet_period):
                return []
            degraded = self._degraded(cand)
        signature = cand.signature = self._signature(cand)
        if cand.key.acid[0] != "o" and (twin := self._observation_twin(cand)):
            cand.abandoned = twin
            return []
        ready = [self._with_plan(self.calibrated[m].exposure) for m in sorted(cand.members)
                 if m in self.calibrated]
        if not ready:
            if cand.members:  # a plan's candidate no exposure joined yet is not abandoned
                cand.abandoned = f"no member has a stage-2 product: {degraded}"
            return []
        if cand.sent and cand.sent[-1].signature == signature:
            return []  # same inputs as the last order: nothing new to combine
        return self._close(cand, ready, signature, degraded)

    def _observation_twin(self, cand: Candidate) -> str | None:
        """Why a plan's candidate (c1NNN) whose members, planned and arrived,
        are all of one observation makes nothing: jwst makes a background,
        mosaic or group candidate's association only across observations
        (rules_level3_base AsnMixin_Science.finalize), and asn_generate prunes
        any other whose members are that observation candidate's (prune.py).
        Asked only when it would close."""
        members = cand.members | self._planned_keys.get(cand.key, set())
        observations = {eid[7:10] for eid in members}  # jw<ppppp><ooo>...
        if len(observations) != 1:
            return None
        observation = observations.pop()
        return (f"all its members are of observation {observation}: jwst makes this "
                f"association as o{observation}'s only")

    def _degraded(self, cand: Candidate) -> str:
        """Why it closes incomplete: what never came, in words (at a close only)."""
        missing = cand.missing
        pending = [m for m in sorted(cand.uncalibrated) if m not in cand.held]
        in_flight = [m for m in pending if m in cand.in_flight]
        failed = [f"{m} ({next(reversed(self._stage2_failed[m].values()))})" for m in pending
                  if m not in cand.in_flight and m in self._stage2_failed]
        never = [m for m in pending if m not in cand.in_flight and m not in self._stage2_failed]
        return "; ".join(filter(None, [
            f"expected but never arrived: {named_briefly(missing)}" if missing else "",
            f"stage 2 ordered, no product within stage3_stage2_wait "
            f"({self.stage2_wait:.0f} s): {named_briefly(in_flight)}" if in_flight else "",
            f"stage 2 failed: {named_briefly(failed)}" if failed else "",
            f"no stage-2 product: {named_briefly(never)}" if never else ""]))

    def _signature(self, cand: Candidate) -> tuple:
        # What an order combines: kept sorted as products come.
        signature = self._signatures.get(cand.key)
        if signature is None or len(signature) != len(cand.digests):
            signature = self._signatures[cand.key] = tuple(cand.digests)
        return signature

    def _close(self, cand: Candidate, ready: list[Exposure], signature: tuple,
               degraded: str | None) -> list[contract.Message]:
        acid = cand.key.acid if not cand.key.acid.startswith("o") else None
        try:
            asn = build_level3(cand.route, ready, degraded=degraded, acid=acid,
                               pool=self._program_pool(cand.key.program))
            validate_level3(asn)
        except (AssociationError, AssociationInvalid, NamingError) as exc:
            if cand.problem != str(exc):
                log.warning("%s: no stage-3 association yet: %s", cand.label, exc)
            cand.problem = str(exc)
            cand.waiting_for = {**cand.waiting_for, "association": str(exc)}
            return []
        cand.problem = None
        name = cand.product_name = asn["products"][0]["name"]
        paths = {m["expname"]: m["exptype"] for p in asn["products"] for m in p["members"]}
        by_path = {path: out for e in ready
                   for path, out in self.calibrated[e.exposure_id].outputs.items()}
        inputs = [{"path": path, "digest": by_path[path]["digest"],
                   "size": by_path[path].get("size", 0), "role": role}
                  for path, role in sorted(paths.items()) if path in by_path]
        wid = order_work_id(cand.route.stage3, self.namespace, inputs)
        cand.waiting_for = {}
        for order in self._restored.get(name, []):
            if order["work_id"] == wid:
                cand.sent.append(Sent(order.get("version") or 1, wid, signature,
                                      order.get("degraded")))
                return []  # sent before a restart
        previous = previous_versions(cand.sent, self._restored.get(cand.product_name or "", []))
        version = max((s.version for s in previous), default=0) + 1
        cand.sent.append(Sent(version, wid, signature, degraded))
        events = [self.calibrated[e.exposure_id].event for e in ready]
        return [stage3_order(cand, asn, ready, events, inputs=inputs, work_id=wid, version=version,
                             degraded=degraded, namespace=self.namespace,
                             step_parameters=self.step_parameters)]

    # -- for metrics and status ----------------------------------------------
    def summary(self, now: float, limit: int | None = None) -> dict[str, Any]:
        return summary(self, now, limit)
