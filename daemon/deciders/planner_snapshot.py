"""The planner's whole decision state as a JSON-able dict, and back (pure).

A restart that replays months of product events takes hours; a snapshot of
the state those events built, plus the tail after the offsets it covers,
takes seconds (doers/planner_snapshots.py writes and reads the file,
doers/planner_loop.py decides which to use). What is kept is what the
decisions read: every namespace's exposures, level-2 candidates, orders
sent, level-3 arrivals, calibrations, candidates and their versions, plans,
holds and the recent event ids. What can be derived cheaply (held and
uncalibrated members, visit tallies, candidates by visit, the companion
index's reverse map) is derived again; what would cost a routing of every
exposure (routes, companion buckets) is kept.

Taking is two steps so the planner never waits for the encoding:
``capture`` copies what the planner may still change (sets, mutable
fields, the maps of per-exposure records but not the records) between
two records, in half a second for a million events (records, events and
headers are never changed in place, only replaced, so they are shared,
not copied); ``encode`` turns the capture into the body in another
thread, encoding only the blocks whose rows changed since the last
snapshot (deciders/snapshot_records.py, snapshot_reuse.py). The body is columnar
(deciders/snapshot_columns.py): exposure ids numbered once and referred to
by number, a header kept once per exposure however many records repeat it,
events and headers as what changed since the previous one, routes by
number. Format 3: the per-exposure events, headers and products are in
blocks (deciders/snapshot_blocks.py) read when a decision first needs one
of their rows, and each restored map keeps row numbers, not an object per
record, until then: a restore costs a few dict entries per exposure.
Format 2 (everything in one JSON body) is refused: the planner rebuilds.

``restore`` raises SnapshotInvalid for anything it cannot read, and for a
body no snapshot writes (deciders/snapshot_body_types.py, checked before
anything is taken from it): the caller then rebuilds from the topics,
never from a half-read or forged snapshot.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from calstream.daemon.deciders import restored_records, snapshot_body_types
from calstream.daemon.deciders.companion_index import CompanionIndex
from calstream.daemon.deciders.event_checks import EventIds
from calstream.daemon.deciders.lazy_records import LazyRecords, key_dict
from calstream.daemon.deciders.level3_candidates import Sent
from calstream.daemon.deciders.planner_records import Candidate, OpenCandidates, Seen
from calstream.daemon.deciders.planner_state import PlannerState
from calstream.daemon.deciders.restored_records import (
    SHARED,
    Headers,
    ResolvedHeaders,
    Rows,
    add_members,
    table_ids,
    table_rows,
)
from calstream.daemon.deciders.snapshot_blocks import BLOCK_ROWS, BlockedColumn, SnapshotInvalid
from calstream.daemon.deciders.snapshot_columns import (
    collector_paused,
    decode_column,
    encode_column,
)
from calstream.daemon.deciders.snapshot_numbers import (
    Numbers,
    key_fields,
    route_body,
    route_table,
    tuples,
)
from calstream.daemon.deciders.snapshot_records import captured_table, encode_records, seed
from calstream.daemon.deciders.snapshot_reuse import BlockCache, BlockWriter
from calstream.steps.associations import Level3Key, Level3Product
from calstream.steps.failures import error_text
from calstream.steps.plans import Plan
from calstream.steps.routing import NOD, Route
from calstream.steps.step_parameters import StepParameters

FORMAT = 3  # 2: events and headers in the body itself, all read at restore
__all__ = ["FORMAT", "SnapshotInvalid", "capture", "encode", "restore", "take"]


def _row(n: int) -> int:
    if n < 0:
        raise SnapshotInvalid("a row number below 0")
    return n


# -- capturing (the planner's thread, between two records) -----------------------


def capture(states: dict[str, PlannerState], *, holds: dict, plans: dict[str, Plan],
            event_ids: EventIds | None = None) -> dict[str, Any]:
    """What the state is now, without the parts the planner may change later
    (new containers; the events and headers it shares are only ever replaced)."""
    return {
        "namespaces": {ns: _capture_state(s) for ns, s in states.items()},
        "holds": dict(holds),
        # The planner's plans, and any a namespace loaded on its own.
        "plans": list({**{i: p for s in states.values() for i, p in s.stage3.plans.items()},
                       **plans}.values()),
        "event_ids": list(event_ids._digests.items()) if event_ids is not None else [],
    }


def _capture_state(s: PlannerState) -> dict[str, Any]:
    """An exposure's record (Seen), arrival and calibration are replaced when
    they change, never changed in place -- except a Seen's release, copied
    here; the candidates and sets are copied. tests/unit/test_planner_snapshot.py
    encodes a capture after the state went on and compares."""
    l3 = s.stage3
    return {
        "namespace": s.namespace, "replay": s.replay,
        # Copies of the maps, not of their records (replaced, never changed in
        # place -- but a Seen's release): deciders/snapshot_records.py reads them.
        "exposures": captured_table(s.exposures),
        "releases": {eid: r for eid, x in key_dict(s.exposures).items()
                     if type(x) is Seen and (r := x.release) is not None},
        "candidates": [(c.science, c.route, c.since, c.sent, c.sent_complete, c.waiting_for)
                       for c in s.candidates.values()],
        "ordered": dict(s.ordered), "rejected": set(s.rejected), "level3": dict(s.level3),
        "index": [(b, set(ids)) for b, ids in s.index._records.items() if ids],
        "sciences": [(b, set(ids)) for b, ids in s.index._sciences.items()],
        "arrived": captured_table(l3.arrived), "calibrated": captured_table(l3.calibrated),
        "l3_candidates": [(c.key, c.route, c.opened, c.changed, set(c.members), list(c.sent),
                           c.expected_by, c.product_name, c.problem, c.signature, c.waiting,
                           c._waiting, c._missing, list(c.digests), c.abandoned)
                          for c in l3.candidates.values()],
        "plans": list(l3.plans), "planned": dict(l3._planned),
        "plan_headers": dict(l3._plan_headers),
        "planned_keys": [(k, set(v)) for k, v in l3._planned_keys.items()],
        "restored": {name: list(orders) for name, orders in l3._restored.items()},
        "visits": [(v, set(ids)) for v, ids in l3._visit_members.items()],
        "incomplete_visits": set(l3._incomplete_visits),
        "stage2_failed": {e: dict(w) for e, w in l3._stage2_failed.items()},
        "stage2_redriven": {e: sorted(m) for e, m in l3._stage2_redriven.items()},
    }


# -- encoding (any thread) -----------------------------------------------------------


def take(states: dict[str, PlannerState], *, holds: dict, plans: dict[str, Plan],
         event_ids: EventIds | None = None) -> dict[str, Any]:
    return encode(capture(states, holds=holds, plans=plans, event_ids=event_ids))


def encode(captured: dict[str, Any], writer: BlockWriter | None = None) -> dict[str, Any]:
    """The snapshot's body (JSON-able, but for blocks reused as stored) from a
    capture; ``writer`` reuses the last snapshot's unchanged blocks
    (deciders/snapshot_reuse.py), none by default."""
    routes = Numbers(route_body)
    writer = writer if writer is not None else BlockWriter(None)
    digests = captured["event_ids"]
    return {
        "format": FORMAT, "block_rows": BLOCK_ROWS,
        "namespaces": {ns: _encode_state(s, ns, routes, writer)
                       for ns, s in captured["namespaces"].items()},
        "routes": routes.table,
        "holds": captured["holds"],
        "plans": [p.to_json() for p in captured["plans"]],
        # One id after another, and their digests (all of one size) as one text.
        "event_ids": {"id": [k for k, _ in digests],
                      "digest": b"".join(v for _, v in digests).hex(),
                      "digest_size": len(digests[0][1]) if digests else 0},
        "blocks": writer.blocks,  # last: doers/planner_snapshots.py stores each on its own
    }


def _encode_state(s: dict[str, Any], ns: str, routes: Numbers,
                  writer: BlockWriter) -> dict[str, Any]:
    names = Numbers()
    records = encode_records(s, ns, names, routes, writer)
    ordered_row = {work_id: row for row, work_id in enumerate(s["ordered"])}
    return {
        "namespace": s["namespace"], "replay": s["replay"],
        **records,
        "candidates": {"id": names.many([c[0] for c in s["candidates"]]),
                       "route": [routes(c[1]) for c in s["candidates"]],
                       "since": [c[2] for c in s["candidates"]],
                       # an order's row in "ordered" (its work id kept once there)
                       "sent": [ordered_row.get(c[3], c[3]) for c in s["candidates"]],
                       "complete": [c[4] for c in s["candidates"]],
                       "waiting_for": encode_column(c[5] for c in s["candidates"])},
        "ordered": {"work_id": list(s["ordered"]),
                    "name": names.many(s["ordered"].values())},
        "rejected": sorted(s["rejected"]),
        "level3": {name: [p.header, outputs] for name, (p, outputs) in s["level3"].items()},
        "index": [[list(b), sorted(names.many(ids))] for b, ids in s["index"]],
        "sciences": [[list(b), sorted(names.many(ids))] for b, ids in s["sciences"]],
        "l3_candidates": [_encode_candidate(c, routes, names) for c in s["l3_candidates"]],
        "plans": sorted(s["plans"]), "planned": s["planned"], "plan_headers": s["plan_headers"],
        "planned_keys": [[key_fields(k), sorted(v)] for k, v in s["planned_keys"]],
        "restored": s["restored"],
        "visits": [[v, sorted(names.many(ids))] for v, ids in s["visits"]],
        "incomplete_visits": sorted(s["incomplete_visits"]),
        "stage2_failed": s["stage2_failed"],  # few: a stage-2 order's dead letters
        "stage2_redriven": s["stage2_redriven"],  # fewer: their redrives
        "names": names.table,  # last: every number above is in it
    }


def _encode_candidate(c: tuple, routes: Numbers, names: Numbers) -> list:
    (key, r, opened, changed, members, sent, expected_by, product_name, problem, signature,
     waiting, waiting_for, missing, digests, abandoned) = c
    return [key_fields(key), routes(r), opened, changed, sorted(names.many(members)),
            [[x.version, x.work_id, list(x.signature), x.degraded] for x in sent],
            expected_by, product_name, problem,
            SHARED if tuple(signature) == tuple(digests) else list(signature),  # as usual
            waiting, waiting_for, missing,
            digests, *([abandoned] if abandoned is not None else [])]


# -- restoring ------------------------------------------------------------------


def restore(body: Any, *, companion_wait: float, level3_settle: float,
            level3_quiet_period: float, step_parameters: StepParameters | None = None,
            reuse: BlockCache | None = None, level3_stage2_wait: float | None = None
            ) -> tuple[dict[str, PlannerState], dict, dict[str, Plan], EventIds]:
    """(states by namespace, holds, plans, event ids) as they were taken.
    Settings (waits, step parameters) are today's configuration, not the
    snapshot's: a restart with a new configuration orders with it.

    ``body["blocks"]`` is a list (the body whole in memory: every block is
    read and checked now) or a reader of stored blocks (each read when a
    decision first needs one of its rows: deciders/snapshot_blocks.py);
    stored blocks are also given to ``reuse``, for the next snapshot to
    write as they are while nothing changes their rows."""
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        found = body.get("format") if isinstance(body, dict) else None
        raise SnapshotInvalid(f"snapshot format {str(found)[:20]} is not {FORMAT}")
    try:
        if body["block_rows"] != BLOCK_ROWS:
            raise SnapshotInvalid(f"blocks of {str(body['block_rows'])[:20]} rows, "
                                  f"not {BLOCK_ROWS}")
        with collector_paused():
            snapshot_body_types.check(body)  # whole, before anything is taken from it
            routes = route_table(body["routes"])
            holds = dict(body["holds"])
            plans = {p["plan_id"]: Plan.from_json(p) for p in body["plans"]}
            event_ids = restored_records.event_ids(body["event_ids"])
            states, columns = {}, []
            for ns, s in body["namespaces"].items():
                state = PlannerState(companion_wait=companion_wait, level3_settle=level3_settle,
                                     level3_quiet_period=level3_quiet_period, namespace=ns,
                                     holds=holds, step_parameters=step_parameters,
                                     level3_stage2_wait=level3_stage2_wait)
                headers, *blocked = _restore_state(state, s, routes, plans, body["blocks"])
                columns += [headers._values, *blocked]
                if reuse is not None and hasattr(body["blocks"], "stored"):
                    seed(reuse, ns, headers, *blocked[:3])
                states[ns] = state
            if type(body["blocks"]) is list:
                for column in columns:
                    column.check_all()
    except SnapshotInvalid:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as exc:
        raise SnapshotInvalid(f"snapshot unreadable: {error_text(exc)}") from None
    return states, holds, plans, event_ids


def _restore_state(state: PlannerState, s: dict, routes: list[Route],
                   plans: dict[str, Plan], blocks) -> list:
    """Restore one namespace; its headers and its lazily read columns (to
    check now, or not): exposure events, products, stage-2 events, arrivals' headers."""
    names = s["names"]
    headers = Headers(names, s["headers"], blocks)
    state.replay = s["replay"]
    ex = s["exposures"]
    ids = table_ids(names, ex, "since", "route")
    release: list[Any] = [None] * len(ids)
    for row, value_ in ex["release"]:
        release[row] = value_
    events = headers.events(blocks, ids, ex["event"])
    # Built when a decision first reads them (deciders/lazy_records.py).
    state.exposures = LazyRecords(table_rows(ids), Rows(restored_records.seen, [
        events, ex["since"], release, [routes[r] for r in ex["route"]]]))
    c = s["candidates"]
    for i, r, since, sent, complete, waiting in zip(
            c["id"], c["route"], c["since"], c["sent"], c["complete"],
            snapshot_body_types.waiting_maps(decode_column(c["waiting_for"]),
                                             "candidates.waiting_for"), strict=True):
        if type(sent) is int:  # its row in "ordered"
            sent = s["ordered"]["work_id"][_row(sent)]
        state.candidates[names[i]] = Candidate(names[i], routes[r], since, sent, complete,
                                               waiting, len(state.candidates))
    state.open_candidates = OpenCandidates(state.candidates.values())
    state.ordered = dict(zip(s["ordered"]["work_id"], [names[i] for i in s["ordered"]["name"]],
                             strict=True))
    # In flight is derived: the orders counted, less their dead letters
    # (absent from a snapshot of before they were read: none).
    state.stage3._stage2_sent = dict(Counter(state.ordered.values()))
    state.stage3._stage2_failed = {e: dict(w) for e, w in s.get("stage2_failed", {}).items()}
    state.stage3._stage2_redriven = {e: set(m) for e, m in s.get("stage2_redriven", {}).items()}
    state.rejected = {tuple(x) for x in s["rejected"]}
    for name, (h, outputs) in s["level3"].items():
        state.level3[name] = (Level3Product(name, h, {o["suffix"]: o["path"]
                                                      for o in outputs.values()}), outputs)
    index = state.index = CompanionIndex()
    for bucket, numbers in s["index"]:
        b = tuple(bucket)
        ids_ = index._records[b] = {names[i] for i in numbers}
        for i in ids_:
            index._filed.setdefault(i, []).append(b)
        if b[0] == NOD:
            state.visits.ids[(b[1], b[2])] = set(ids_)
    index._sciences = {tuple(b): {names[i] for i in numbers} for b, numbers in s["sciences"]}
    arrived_headers, products, calibrated = _restore_level3(state, s, routes, plans, headers,
                                                            blocks)
    return [headers, events, products, calibrated, arrived_headers]


def _restore_level3(state: PlannerState, s: dict, routes: list[Route], plans: dict[str, Plan],
                    headers: Headers, blocks) -> list:
    l3, names = state.stage3, s["names"]
    a, c = s["arrived"], s["calibrated"]
    arrived_ids = table_ids(names, a, "header", "since", "provisional")
    arrived_headers = ResolvedHeaders(headers, arrived_ids, a["header"])
    products = BlockedColumn(blocks, a["products"], len(arrived_ids))
    l3.arrived = LazyRecords(table_rows(arrived_ids), Rows(restored_records.arrived(
        state.exposures), [arrived_headers, products, a["since"], a["provisional"]]))
    calibrated_ids = table_ids(names, c, "since")
    events = headers.events(blocks, calibrated_ids, c["event"])
    l3.calibrated = LazyRecords(table_rows(calibrated_ids),
                                Rows(restored_records.calibrated, [events, c["since"]]))
    l3.plans = {p: plans[p] for p in s["plans"]}
    l3._planned = {k: tuple(v) for k, v in s["planned"].items()}
    l3._plan_headers = s["plan_headers"]
    l3._planned_keys = {Level3Key(*tuples(k)): set(v) for k, v in s["planned_keys"]}
    l3._restored = s["restored"]
    l3._visit_members = {v: {names[i] for i in numbers} for v, numbers in s["visits"]}
    l3._incomplete_visits = set(s["incomplete_visits"])
    visit_of = {e: v for v, ids in l3._visit_members.items() for e in ids}
    provisional = {eid for eid, p in zip(arrived_ids, a["provisional"], strict=True) if p}
    for (key, r, opened, changed, members, sent, expected_by, name, problem, signature,
         waiting, waiting_for, missing, digests, *abandoned) in s["l3_candidates"]:
        cand = l3._new_candidate(Level3Key(*tuples(key)), routes[r], opened, changed)
        add_members(l3, cand, [names[m] for m in members], visit_of, provisional)
        cand.digests = digests
        cand.sent = [Sent(v, w, tuple(sig), d) for v, w, sig, d in sent]
        cand.expected_by, cand.product_name, cand.problem = expected_by, name, problem
        cand.signature = tuple(digests if signature == SHARED else signature)
        cand.waiting, cand._waiting, cand._missing = waiting, waiting_for, missing
        cand.abandoned = abandoned[0] if abandoned else None  # absent: not abandoned
    return [arrived_headers, products, events]
