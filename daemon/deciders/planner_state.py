"""The planner's decisions, as pure logic: product events in, messages out.

No Kafka here (daemon/doers/planner_loop.py does the I/O), so every decision can be
tested from events alone. Everything the planner knows can be rebuilt from
the topics: the exposures from the product events, what was already ordered
from the work-order topic, the holds from the holds topic.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.level3_state import Level3State
from calstream.steps.associations import (
    AssociationError,
    Exposure,
    Level3Product,
    MissingCompanions,
    association_filename,
    build_level2,
    companion_kind,
    validate_level2,
)
from calstream.steps.naming import parse_exposure_name
from calstream.steps.routing import Route, RoutingError, route
from calstream.topics import contract

log = logging.getLogger("calstream.planner")

PLANNED = "PLANNED"


@dataclass(frozen=True)
class Emit:
    """A message the planner wants published."""

    topic: str  # logical topic
    key: str
    message: contract.Message


@dataclass
class Seen:
    """One exposure's latest successful detector1 product."""

    exposure: Exposure
    outputs: dict[str, dict[str, Any]]  # path -> {path, digest, size, suffix}
    event: dict[str, Any]
    since: float  # when its product event was emitted (Unix time)

    release: dict[str, Any] | None = None  # how a PLANNED hold on this content was released

    @property
    def digest(self) -> str:
        return self.event["inputs"][0]["digest"] if self.event["inputs"] else ""

    @property
    def provisional(self) -> bool:
        """Still held: PLANNED pointing and no release of this very content."""
        return self.event.get("pointing_quality") == PLANNED and self.release is None


@dataclass
class Candidate:
    """A science exposure's level-2 association, waiting or ordered."""

    science: str
    route: Route
    since: float
    sent: str | None = None  # work id of the last order sent
    sent_complete: bool = False  # whether that order had every companion
    waiting_for: dict[str, str] = field(default_factory=dict)


class PlannerState:
    def __init__(self, *, companion_wait: float, level3_settle: float = 0.0,
                 level3_quiet_period: float = 3600.0, namespace: str = "live",
                 holds: dict[str, dict[str, Any]] | None = None):
        self.companion_wait = companion_wait
        self.namespace = namespace
        # A reprocessing namespace's orders carry its replay (context, priority).
        self.replay: dict[str, Any] | None = None
        self.stage3 = Level3State(settle=level3_settle, quiet_period=level3_quiet_period,
                                  namespace=namespace)
        self.exposures: dict[str, Seen] = {}
        self.candidates: dict[str, Candidate] = {}
        self.ordered: dict[str, str] = {}  # work id -> product name, from the work-order topic
        # exposure id -> last hold record; shared by every namespace: a hold is
        # on an exposure's content, wherever it is reprocessed.
        self.holds: dict[str, dict[str, Any]] = {} if holds is None else holds
        self.rejected: set[tuple[str, str]] = set()  # (exposure id, digest) dead-lettered
        self.level3: dict[str, tuple[Level3Product, dict[str, dict]]] = {}  # name -> (record, outputs)
        self._by_program: dict[str, set[str]] = {}  # program -> exposure ids
        self._level3_by_program: dict[str, set[str]] = {}

    # -- per-program views: companions never cross programs, so every decision
    # looks at one program's records, however long the planner has run.
    def _program_exposures(self, program: str) -> list[Seen]:
        return [self.exposures[e] for e in self._by_program.get(program, ())]

    def _program_level3(self, program: str):
        return [self.level3[n] for n in self._level3_by_program.get(program, ())]

    def _program_candidates(self, program: str) -> list[Candidate]:
        return [self.candidates[e] for e in self._by_program.get(program, ())
                if e in self.candidates]

    # -- restoring ---------------------------------------------------------
    def restore_order(self, order: contract.Message) -> None:
        if order["stage"] == "stage3":
            self.stage3.restore_order(order)
            return
        self.ordered[order["work_id"]] = order["product_name"]

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
        if event["outcome"] != "success":
            return []
        if event.get("replay") and self.replay is None:
            self.replay = dict(event["replay"])
        if event["stage"] == "stage3":
            return self._observe_level3(event, now)
        if event["stage"] == "stage2":
            return self._stage3(self.stage3.observe_stage2(event.body, now))
        if event["stage"] != "detector1":
            return []
        exposure_id = event["exposure_id"]
        digest = event["inputs"][0]["digest"] if event["inputs"] else ""
        try:
            r = route(event["header"])
        except RoutingError as exc:
            if (exposure_id, digest) in self.rejected:
                return []
            self.rejected.add((exposure_id, digest))
            return [self._dead_letter(event, f"cannot route {exposure_id}: {exc}")]
        products = {o["suffix"]: o["path"] for o in event["outputs"]}
        seen = Seen(Exposure(exposure_id, event["header"], products),
                    {o["path"]: o for o in event["outputs"]}, event,
                    contract.parse_time(event["emitted_at"]).timestamp())
        previous = self.exposures.get(exposure_id)
        if previous is not None and previous.event["work_id"] == event["work_id"]:
            seen.since = previous.since  # a re-emitted event: the wait started at the first
        hold = self.holds.get(exposure_id)
        if hold and hold["state"] == "released" and hold.get("release") \
                and hold["digest"] == seen.digest and hold["release"]["path"] != "redelivery":
            seen.release = hold["release"]  # a release made before a restart still holds
        self.exposures[exposure_id] = seen
        self._by_program.setdefault(seen.exposure.name.program, set()).add(exposure_id)
        out: list[Emit] = []
        out += self._hold_or_release(seen)
        if r.stage2 is not None:
            cand = self.candidates.get(exposure_id)
            if cand is None:
                self.candidates[exposure_id] = Candidate(exposure_id, r, seen.since)
            else:
                cand.route = r
        # The new exposure may complete any candidate of its visit.
        return out + self._reconsider(seen, now)

    def observe_pointing(self, update: contract.Message, now: float) -> list[Emit]:
        """A pointing correction or an operator's release for a held exposure."""
        exposure_id = update["exposure_id"]
        applied = (self.holds.get(exposure_id) or {}).get("release") or {}
        if applied.get("update_event_id") == update.event_id:
            return []  # read again after a restart: already applied
        seen = self.exposures.get(exposure_id)
        problem = None
        if seen is None:
            problem = f"unknown exposure {exposure_id}: no detector1 product for it"
        elif not seen.provisional:
            problem = f"{exposure_id} is not held (ENGQLPTG={seen.event.get('pointing_quality')}"\
                      f"{', already released' if seen.release else ''})"
        elif update.get("digest") and update["digest"] != seen.digest:
            problem = (f"{exposure_id}: the update is for content {update['digest']}, "
                       f"the held file is {seen.digest}")
        if problem:
            return [self._reject_update(update, problem)]
        if update["action"] == "correct":
            release = {"path": "pointing", "at": update["emitted_at"], "by": update.get("by"),
                       "reason": update.get("reason") or
                       f"corrected pointing ({update['keywords']['ENGQLPTG']}) from "
                       f"{update.get('source') or 'the pointing topic'}",
                       "digest": seen.digest, "update_event_id": update.event_id,
                       "keywords": dict(update["keywords"])}
        else:
            release = {"path": "operator", "at": update["emitted_at"], "by": update.get("by"),
                       "reason": update["reason"], "digest": seen.digest,
                       "update_event_id": update.event_id}
        seen.release = release
        return [self._release(seen, release)] + self._reconsider(seen, now)

    def adopt_release(self, exposure_id: str, release: dict[str, Any],
                      now: float) -> list[Emit]:
        """Another namespace released this content: it is released here too
        (the hold record is shared and already published)."""
        seen = self.exposures.get(exposure_id)
        if seen is None or not seen.provisional or seen.digest != release.get("digest"):
            return []
        seen.release = release
        return self._reconsider(seen, now)

    def _reconsider(self, seen: Seen, now: float) -> list[Emit]:
        """An exposure arrived or was released: the level-2 and level-3
        associations it may complete."""
        out: list[Emit] = []
        for cand in self._affected(seen):
            out += self._evaluate(cand, now)
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
        self._level3_by_program.setdefault(event["program"], set()).add(event["product_name"])
        out: list[Emit] = []
        for cand in self._program_candidates(event["program"]):
            sci = self.exposures.get(cand.science)
            if sci and companion_kind(cand.route, sci.exposure, product):
                out += self._evaluate(cand, now)
        return out

    def tick(self, now: float) -> list[Emit]:
        """Time passes: companions that never came stop blocking."""
        out: list[Emit] = []
        for cand in list(self.candidates.values()):
            if cand.sent is None or not cand.sent_complete:
                out += self._evaluate(cand, now)
        out += self._stage3(self.stage3.tick(now))
        return out

    # -- decisions ------------------------------------------------------------
    def _affected(self, seen: Seen) -> list[Candidate]:
        name = seen.exposure.name
        result = []
        for cand in self._program_candidates(name.program):
            sci = self.exposures.get(cand.science)
            if sci is None:
                continue
            if cand.science == seen.exposure.exposure_id:
                result.append(cand)
                continue
            same_program = sci.exposure.name.program == name.program
            if same_program and companion_kind(cand.route, sci.exposure, seen.exposure):
                result.append(cand)
        return result

    def _visit_complete(self, sci: Seen) -> bool:
        """Every exposure NEXPOSUR promises for this visit and detector has arrived."""
        name = sci.exposure.name
        expected = int(sci.exposure.header.get("NEXPOSUR") or 0)
        have = {s.exposure.exposure_id for s in self._program_exposures(name.program)
                if s.exposure.name.visit_id == name.visit_id
                and s.exposure.name.detector == name.detector}
        return expected > 0 and len(have) >= expected

    def _evaluate(self, cand: Candidate, now: float) -> list[Emit]:
        sci = self.exposures[cand.science]
        held = [m for m in self._members_of(cand, sci) if m.provisional]
        if held:
            cand.waiting_for = {"pointing": ", ".join(
                f"{m.exposure.exposure_id} has ENGQLPTG=PLANNED" for m in held)}
            return []
        program = sci.exposure.name.program
        others = [s.exposure for s in self._program_exposures(program)
                  if s.exposure.exposure_id != cand.science and not s.provisional]
        others += [product for product, _ in self._program_level3(program)]
        complete = self._visit_complete(sci)
        waited = now - cand.since
        try:
            asn = build_level2(cand.route, sci.exposure, others, visit_complete=complete)
            is_complete = True
        except MissingCompanions as missing:
            cand.waiting_for = dict(missing.missing)
            if waited < self.companion_wait or cand.sent is not None:
                return []
            asn = build_level2(cand.route, sci.exposure, others, visit_complete=complete,
                               allow_degraded=True)
            is_complete = False
        except AssociationError as exc:
            cand.waiting_for = {"association": str(exc)}
            return []
        cand.waiting_for = {}
        validate_level2(asn)
        order = self._work_order(cand, sci, asn, degraded=not is_complete)
        wid = order.message["work_id"]
        if wid == cand.sent or wid in self.ordered:
            cand.sent, cand.sent_complete = wid, is_complete
            return []
        if cand.sent is not None and not is_complete:
            return []  # never replace an order with a less complete one
        cand.sent, cand.sent_complete = wid, is_complete
        self.ordered[wid] = cand.science
        return [order]

    def _members_of(self, cand: Candidate, sci: Seen) -> list[Seen]:
        members = [sci]
        for s in self._program_exposures(sci.exposure.name.program):
            if s is not sci and companion_kind(cand.route, sci.exposure, s.exposure):
                members.append(s)
        return members

    def _work_order(self, cand: Candidate, sci: Seen, asn: dict, *, degraded: bool) -> Emit:
        paths = {m["expname"]: m["exptype"] for p in asn["products"] for m in p["members"]}
        program = sci.exposure.name.program
        by_path = {path: out for s in self._program_exposures(program)
                   for path, out in s.outputs.items()}
        by_path.update({path: out for _, outs in self._program_level3(program)
                        for path, out in outs.items()})
        inputs = [{"path": path, "digest": by_path[path]["digest"],
                   "size": by_path[path].get("size", 0), "role": role}
                  for path, role in sorted(paths.items()) if path in by_path]
        wid = contract.event_id("work_order", cand.route.stage2,
                                sorted((i["role"], i["digest"]) for i in inputs))
        if self.namespace != "live":
            wid = contract.event_id("work_order", wid, self.namespace)
        name = parse_exposure_name(cand.science)
        ev = sci.event
        members = [m for m in self._members_of(cand, sci) if m.release]
        corrections = {Path(p).name: {
            "keywords": m.release["keywords"],
            "note": f"calstream: pointing corrected by update {m.release['update_event_id']}"}
            for m in members if m.release["path"] == "pointing"
            for p in m.outputs if p in paths}
        operator = [m for m in members if m.release["path"] == "operator"]
        annotation = ("calstream: ENGQLPTG=PLANNED hold released by operator: " + "; ".join(
            f"{m.exposure.exposure_id}: {m.release['reason']} ({m.release.get('by') or '?'})"
            for m in operator)) if operator else None
        releases = {m.exposure.exposure_id: m.release for m in members}
        if corrections or annotation:
            wid = contract.event_id("work_order", wid, sorted(corrections), annotation)
        message = contract.build(
            "work_order", contract.event_id("work_order", wid),
            work_id=wid, stage="stage2", pipeline=cand.route.stage2,
            product_name=cand.science, program=name.program, observation=name.observation,
            association=asn, association_path=association_filename(asn), inputs=inputs,
            crds_context=None, priority="live", namespace=self.namespace,
            parameters={k: v for k, v in (("pointing_corrections", corrections),
                                          ("annotation", annotation)) if v},
            releases=releases or None,
            degraded=asn["degraded_status"] if degraded else None,
            exposure_id=cand.science, visit=name.visit, instrument=ev.get("instrument"),
            exp_type=ev.get("exp_type"), header=ev.get("header"),
            pointing_quality=(sci.release or {}).get("keywords", {}).get(
                "ENGQLPTG", ev.get("pointing_quality")),
            pointing_provisional=bool(ev.get("pointing_provisional"))
            and (sci.release or {}).get("path") != "pointing",
            arrived_at=ev.get("arrived_at"))
        return Emit("work.stage2", cand.science, self._as_namespace(message))

    def _hold_or_release(self, seen: Seen) -> list[Emit]:
        exposure_id = seen.exposure.exposure_id
        current = self.holds.get(exposure_id)
        digest = seen.event["inputs"][0]["digest"]
        if seen.provisional:
            if current and current["state"] == "held" and current["digest"] == digest:
                return []
            body = dict(exposure_id=exposure_id, program=seen.exposure.name.program,
                        state="held", since=seen.event["emitted_at"], digest=digest,
                        reason="ENGQLPTG=PLANNED: pointing is provisional; nothing past "
                               "detector1 until it is corrected", release=None)
        elif current and current["state"] == "held":
            return [self._release(seen, {
                "path": "redelivery", "at": seen.event["emitted_at"], "by": None,
                "reason": f"redelivered with ENGQLPTG={seen.event.get('pointing_quality')}",
                "digest": digest})]
        else:
            return []
        return [self._hold_message(exposure_id, body, digest)]

    def _release(self, seen: Seen, release: dict[str, Any]) -> Emit:
        exposure_id = seen.exposure.exposure_id
        current = self.holds.get(exposure_id) or {}
        body = {k: v for k, v in current.items()
                if k not in ("schema", "schema_version", "event_id", "emitted_at", "producer")}
        body.update(exposure_id=exposure_id, program=seen.exposure.name.program,
                    state="released", release=release)
        body.setdefault("since", seen.event["emitted_at"])
        body.setdefault("digest", seen.digest)
        body.setdefault("reason", "ENGQLPTG=PLANNED")
        return self._hold_message(exposure_id, body, release["digest"])

    def _hold_message(self, exposure_id: str, body: dict[str, Any], digest: str) -> Emit:
        message = contract.build(
            "hold", contract.event_id("hold", exposure_id, body["digest"], body["state"], digest,
                                      (body.get("release") or {}).get("path")),
            **body)
        self.holds[exposure_id] = message.body
        return Emit("holds", exposure_id, message)

    def _reject_update(self, update: contract.Message, reason: str) -> Emit:
        message = contract.build(
            "dead_letter", contract.event_id("dead_letter", "planner", update.event_id),
            category="rejected_update", reason=f"pointing update rejected: {reason}",
            stage="planner", attempts=0, exposure_id=update["exposure_id"],
            original={"topic": "pointing", "key": update["exposure_id"],
                      "value": json.dumps(update.body), "value_encoding": "utf-8"})
        return Emit("deadletter", update["exposure_id"], message)

    def _dead_letter(self, event: contract.Message, reason: str) -> Emit:
        message = contract.build(
            "dead_letter", contract.event_id("dead_letter", "planner", event.event_id),
            category="bad_input", reason=reason, stage="planner", attempts=0,
            exposure_id=event.get("exposure_id"),
            path=event["inputs"][0]["path"] if event["inputs"] else None,
            digest=event["inputs"][0]["digest"] if event["inputs"] else None)
        return Emit("deadletter", event.get("exposure_id") or "", message)

    # -- for metrics and status ---------------------------------------------
    def summary(self, now: float) -> dict[str, Any]:
        waiting = [c for c in self.candidates.values() if c.sent is None]
        held = [h for h in self.holds.values() if h["state"] == "held"]
        oldest = min((contract.parse_time(h["since"]).timestamp() for h in held), default=None)
        return {"waiting": len(waiting), "level3": self.stage3.summary(now),
                "waiting_for": {c.science: dict(c.waiting_for) for c in waiting},
                "held": len(held),
                "oldest_hold_age": (now - oldest) if oldest is not None else 0.0,
                "degraded": sum(1 for c in self.candidates.values()
                                if c.sent is not None and not c.sent_complete)}


def observe_pointing_everywhere(states: Iterable[PlannerState], update: contract.Message,
                                now: float) -> list[Emit]:
    """A pointing update for every namespace at once.

    A hold is on an exposure's content wherever it is reprocessed, so its
    release is too: a replay that caught an exposure while it was held must
    go on when the correction comes. The first state that has seen the
    exposure (the live one first) judges the update and publishes the
    release; the others adopt it.
    """
    states = list(states)
    exposure_id = update["exposure_id"]
    owner = next((s for s in states if exposure_id in s.exposures), states[0])
    out = owner.observe_pointing(update, now)
    release = (owner.holds.get(exposure_id) or {}).get("release") or {}
    if release.get("update_event_id") == update.event_id:
        for state in states:
            if state is not owner:
                out += state.adopt_release(exposure_id, release, now)
    return out
