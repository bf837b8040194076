"""The planner's whole decision state as a JSON-able dict, and back (pure).

A restart that replays months of product events takes hours; a snapshot of
the state those events built, plus the tail after the offsets it covers,
takes seconds (doers/planner_snapshots.py writes and reads the file,
doers/planner_loop.py decides which to use). What is kept is what the
decisions read: every namespace's exposures, level-2 candidates, orders
sent, level-3 arrivals, calibrations, candidates and their versions, plans,
holds and the recent event ids. What can be derived cheaply (held and
uncalibrated members, visit tallies, candidates by visit) is derived again;
what would cost a routing of every exposure (routes, companion buckets) is
kept. A header is kept once per exposure however many records repeat it.

``restore`` raises SnapshotInvalid for anything it cannot read: the caller
then rebuilds from the topics, never from a half-read snapshot.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from calstream.daemon.deciders.companion_index import CompanionIndex
from calstream.daemon.deciders.event_checks import EventIds
from calstream.daemon.deciders.level3_candidates import Arrived, Calibrated, Sent
from calstream.daemon.deciders.level3_candidates import Candidate as Level3Candidate
from calstream.daemon.deciders.planner_records import Candidate, Seen, routed_exposure
from calstream.daemon.deciders.planner_state import PlannerState
from calstream.steps.associations import Exposure, Level3Key, Level3Product
from calstream.steps.plans import Plan
from calstream.steps.routing import NOD, Route
from calstream.steps.step_parameters import StepParameters

FORMAT = 1
SHARED = "="  # in place of a header: the exposure's header, kept once in "headers"


class SnapshotInvalid(ValueError):
    """A snapshot that cannot be restored; the reason says why."""


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class _Routes:
    """Routes kept once each, referred to by number (most exposures share a few)."""

    def __init__(self) -> None:
        self.table: list[dict] = []
        self._numbers: dict[Route, int] = {}

    def number(self, r: Route) -> int:
        n = self._numbers.get(r)
        if n is None:
            n = self._numbers[r] = len(self.table)
            body = dataclasses.asdict(r)
            body["also"] = self.number(r.also) if r.also else None
            self.table.append(body)
        return n


def _route_table(table: list[dict]) -> list[Route]:
    routes: list[Route] = []
    for body in table:
        also = routes[body["also"]] if body["also"] is not None else None
        routes.append(Route(**{**body, "needs": tuple(body["needs"]), "also": also}))
    return routes


def _key(key: Level3Key) -> list:
    return [getattr(key, f.name) for f in dataclasses.fields(key)]


# -- taking ---------------------------------------------------------------------


def take(states: dict[str, PlannerState], *, holds: dict, plans: dict[str, Plan],
         event_ids: EventIds | None = None) -> dict[str, Any]:
    routes = _Routes()
    return {
        "format": FORMAT,
        "namespaces": {ns: _take_state(s, routes) for ns, s in states.items()},
        "routes": routes.table,
        "holds": dict(holds),  # new containers: the planner goes on while this is written
        # The planner's plans, and any a namespace loaded on its own.
        "plans": [p.to_json() for p in {**{i: p for s in states.values()
                                            for i, p in s.stage3.plans.items()},
                                         **plans}.values()],
        "event_ids": [[k, v.hex()] for k, v in event_ids._digests.items()]
        if event_ids is not None else [],
    }


def _take_state(s: PlannerState, routes: _Routes) -> dict[str, Any]:
    headers: dict[str, Any] = {}

    def header_of(eid: str, header: Any) -> Any:
        known = headers.setdefault(eid, header)
        return SHARED if known is header or known == header else header

    def event(eid: str, body: dict) -> dict:
        return {**body, "header": header_of(eid, body.get("header"))} if "header" in body \
            else dict(body)

    l3 = s.stage3
    out: dict[str, Any] = {
        "namespace": s.namespace, "replay": s.replay,
        "exposures": {eid: [event(eid, seen.event), seen.since, seen.release,
                            routes.number(seen.exposure.route)]
                      for eid, seen in s.exposures.items()},
        "candidates": [[c.science, routes.number(c.route), c.since, c.sent, c.sent_complete,
                        c.waiting_for] for c in s.candidates.values()],
        "ordered": dict(s.ordered), "rejected": sorted(s.rejected),
        "level3": {name: [p.header, outputs] for name, (p, outputs) in s.level3.items()},
        "index": [[list(b), sorted(ids)] for b, ids in s.index._records.items() if ids],
        "sciences": [[list(b), sorted(ids)] for b, ids in s.index._sciences.items()],
        "arrived": {eid: [header_of(eid, a.exposure.header), dict(a.exposure.products),
                          a.since, a.provisional] for eid, a in l3.arrived.items()},
        "calibrated": {eid: [event(eid, c.event), c.since] for eid, c in l3.calibrated.items()},
        "l3_candidates": [_take_candidate(c, routes) for c in l3.candidates.values()],
        "plans": sorted(l3.plans),
        "planned": dict(l3._planned), "plan_headers": dict(l3._plan_headers),
        "planned_keys": [[_key(k), sorted(v)] for k, v in l3._planned_keys.items()],
        "restored": {name: list(orders) for name, orders in l3._restored.items()},
        "visits": {v: sorted(ids) for v, ids in l3._visit_members.items()},
        "incomplete_visits": sorted(l3._incomplete_visits),
    }
    out["headers"] = headers
    return out


def _take_candidate(c: Level3Candidate, routes: _Routes) -> list:
    return [_key(c.key), routes.number(c.route), c.opened, c.changed, sorted(c.members),
            [[x.version, x.work_id, list(x.signature), x.degraded] for x in c.sent],
            c.expected_by, c.product_name, c.problem, list(c.signature), c.waiting,
            c._waiting, c._missing]


# -- restoring ------------------------------------------------------------------


def restore(body: Any, *, companion_wait: float, level3_settle: float,
            level3_quiet_period: float, step_parameters: StepParameters | None = None
            ) -> tuple[dict[str, PlannerState], dict, dict[str, Plan], EventIds]:
    """(states by namespace, holds, plans, event ids) as they were taken.
    Settings (waits, step parameters) are today's configuration, not the
    snapshot's: a restart with a new configuration orders with it."""
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        found = body.get("format") if isinstance(body, dict) else None
        raise SnapshotInvalid(f"snapshot format {str(found)[:20]} is not {FORMAT}")
    try:
        routes = _route_table(body["routes"])
        holds = dict(body["holds"])
        plans = {p["plan_id"]: Plan.from_json(p) for p in body["plans"]}
        event_ids = EventIds()
        for k, v in body["event_ids"]:
            event_ids._digests[k] = bytes.fromhex(v)
        states = {}
        for ns, s in body["namespaces"].items():
            state = PlannerState(companion_wait=companion_wait, level3_settle=level3_settle,
                                 level3_quiet_period=level3_quiet_period, namespace=ns,
                                 holds=holds, step_parameters=step_parameters)
            _restore_state(state, s, routes, plans)
            states[ns] = state
    except SnapshotInvalid:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise SnapshotInvalid(f"snapshot unreadable: {type(exc).__name__}: {exc}") from None
    return states, holds, plans, event_ids


def _restore_state(state: PlannerState, s: dict, routes: list[Route],
                   plans: dict[str, Plan]) -> None:
    headers = s["headers"]

    def header(eid: str, value: Any) -> Any:
        return headers[eid] if value == SHARED else value

    def event(eid: str, body: dict) -> dict:
        if "header" in body:
            body["header"] = header(eid, body["header"])
        return body

    state.replay = s["replay"]
    for eid, (ev, since, release, r) in s["exposures"].items():
        ev = event(eid, ev)
        exposure = routed_exposure(eid, ev["header"], {o["suffix"]: o["path"]
                                                       for o in ev["outputs"]}, routes[r])
        state.exposures[eid] = Seen(exposure, {o["path"]: o for o in ev["outputs"]}, ev, since,
                                    release)
    for science, r, since, sent, complete, waiting in s["candidates"]:
        state.candidates[science] = Candidate(science, routes[r], since, sent, complete, waiting)
    state.ordered = dict(s["ordered"])
    state.rejected = {tuple(x) for x in s["rejected"]}
    for name, (h, outputs) in s["level3"].items():
        state.level3[name] = (Level3Product(name, h, {o["suffix"]: o["path"]
                                                      for o in outputs.values()}), outputs)
    index = state.index = CompanionIndex()
    for bucket, ids in s["index"]:
        b = tuple(bucket)
        index._records[b] = set(ids)
        for i in ids:
            index._filed.setdefault(i, []).append(b)
        if b[0] == NOD:
            state._visit_detector[(b[1], b[2])] = set(ids)
    index._sciences = {tuple(b): set(ids) for b, ids in s["sciences"]}
    _restore_level3(state, s, routes, plans, header, event)


def _restore_level3(state: PlannerState, s: dict, routes: list[Route], plans: dict[str, Plan],
                    header, event) -> None:
    l3 = state.stage3
    for eid, (h, products, since, provisional) in s["arrived"].items():
        seen = state.exposures.get(eid)
        h = header(eid, h)
        if seen is not None and seen.exposure.header is h and seen.exposure.products == products:
            exposure = seen.exposure  # one object, as when it arrived
        else:
            exposure = Exposure(eid, h, products)
        l3.arrived[eid] = Arrived(exposure, since, provisional)
    for eid, (ev, since) in s["calibrated"].items():
        ev = event(eid, ev)
        l3.calibrated[eid] = Calibrated(
            Exposure(eid, ev["header"], {o["suffix"]: o["path"] for o in ev["outputs"]}),
            {o["path"]: o for o in ev["outputs"]}, ev, since)
    l3.plans = {p: plans[p] for p in s["plans"]}
    l3._planned = {k: tuple(v) for k, v in s["planned"].items()}
    l3._plan_headers = s["plan_headers"]
    l3._planned_keys = {Level3Key(*_tuples(k)): set(v) for k, v in s["planned_keys"]}
    l3._restored = s["restored"]
    l3._visit_members = {v: set(ids) for v, ids in s["visits"].items()}
    l3._incomplete_visits = set(s["incomplete_visits"])
    for (key, r, opened, changed, members, sent, expected_by, name, problem, signature,
         waiting, waiting_for, missing) in s["l3_candidates"]:
        cand = l3._new_candidate(Level3Key(*_tuples(key)), routes[r], opened, changed)
        for m in members:
            l3._add_member(cand, m)
        cand.sent = [Sent(v, w, tuple(sig), d) for v, w, sig, d in sent]
        cand.expected_by, cand.product_name, cand.problem = expected_by, name, problem
        cand.signature = tuple(signature)
        cand.waiting, cand._waiting, cand._missing = waiting, waiting_for, missing
