"""A restored snapshot decides exactly as the full rebuild does.

The recorded stream (tests/unit/planner_stream.py: several programs, holds,
a correction and an operator's release, a late exposure superseding a
mosaic, a redelivery, new content, a plan, ticks) is played whole; then
again cut at every step: the state so far goes through a snapshot (as
JSON text, as on disk) and the rest of the stream is played on the
restored state. Every cut must emit what the whole run emitted after that
point, and end with the same orders, holds and versions.
"""

from __future__ import annotations

import json

import pytest

from calstream.daemon.deciders import planner_snapshot
from calstream.daemon.deciders.event_checks import EventIds
from calstream.daemon.deciders.lazy_records import LazyRecords, Parts, raw_items

from .planner_stream import SETTINGS, comparable, new_state, play, steps


def _through_snapshot(state):
    ids = EventIds()
    ids.consistent("e" * 64, {"a": 1})
    body = planner_snapshot.take({"live": state}, holds=state.holds, plans={}, event_ids=ids)
    text = json.dumps(body)
    states, holds, plans, event_ids = planner_snapshot.restore(json.loads(text), **SETTINGS)
    assert event_ids.consistent("e" * 64, {"a": 1}) and not event_ids.consistent("e" * 64, {})
    assert holds == state.holds
    return states["live"]


def _final(state):
    holds = {k: {f: v for f, v in h.items() if f != "emitted_at"} for k, h in state.holds.items()}
    return (sorted(state.ordered), json.dumps(holds, sort_keys=True),
            sorted((c.label, [(s.version, s.work_id) for s in c.sent])
                   for c in state.stage3.candidates.values()),
            json.dumps(state.summary(1e10), sort_keys=True, default=str))


def _kept(state):
    """What the level-3 state keeps as members arrive (rebuilt in bulk on restore)."""
    l3 = state.stage3
    return ({k: (sorted(c.members), sorted(c.held), sorted(c.uncalibrated), sorted(c.visits),
                 c.digests, sorted(c.in_flight), c.abandoned) for k, c in l3.candidates.items()},
            l3._stage2_sent, l3._stage2_failed,
            {k: v for k, v in l3._keys_of_member.items() if v},
            {k: v for k, v in l3._keys_by_visit.items() if v},
            state.index._records.keys() - {b for b, ids in state.index._records.items()
                                           if not ids},
            {k: sorted(v) for k, v in state.index._filed.items() if v})


def _records(state):
    """Every per-exposure record (built now if a restore left it as parts)."""
    l3 = state.stage3
    return dict(state.exposures.items()), dict(l3.arrived.items()), dict(l3.calibrated.items())


def _built(state) -> int:
    l3 = state.stage3
    return sum(type(v) is not Parts for records in (state.exposures, l3.arrived, l3.calibrated)
               for _, v in raw_items(records))


def test_every_cut_of_the_stream_restores_to_the_same_decisions():
    stream = steps(dead_letters=True)
    whole = new_state()
    per_step = [play(whole, [step]) for step in stream]
    assert sum(len(e) for e in per_step) > 10
    built_later = []
    for cut in range(len(stream) + 1):
        first = new_state()
        play(first, stream[:cut])
        restored = _through_snapshot(first)
        assert _kept(restored) == _kept(first), f"cut at step {cut}"
        # Restored records are built when a decision first reads them, not before,
        # and a snapshot of the unbuilt state is the snapshot of the built one.
        assert _built(restored) == 0, f"cut at step {cut}"
        assert json.dumps(planner_snapshot.take({"live": restored}, holds=restored.holds,
                                                plans={})) == json.dumps(
            planner_snapshot.take({"live": first}, holds=first.holds, plans={}))
        rest = play(restored, stream[cut:])
        built_later.append(_built(restored))
        expected = [e for emits in per_step[cut:] for e in emits]
        assert comparable(rest) == comparable(expected), f"cut at step {cut}"
        assert _final(restored) == _final(whole), f"cut at step {cut}"
        assert _records(restored) == _records(whole), f"cut at step {cut}"
    # The lazy path was taken: decisions after a restore read (and built) some
    # restored records, the rest was never built.
    assert any(0 < n for n in built_later[1:-1])
    assert isinstance(restored.exposures, LazyRecords)


def test_lazy_records_behave_as_the_dict_they_replace():
    built = []

    def build(key, parts):
        built.append(key)
        return {"key": key, "parts": list(parts)}

    lazy = LazyRecords({"a": Parts((1,)), "b": Parts((2,)), "c": {"key": "c"}}, build)
    plain = {"a": build("a", (1,)), "b": build("b", (2,)), "c": {"key": "c"}}
    built.clear()
    assert len(lazy) == 3 and list(lazy) == ["a", "b", "c"] and "a" in lazy and "z" not in lazy
    assert built == []  # neither len, iteration nor "in" builds
    assert lazy.get("z") is None and lazy.get("z", 5) == 5
    assert lazy["b"] == plain["b"] and lazy.get("b") is lazy["b"] and built == ["b"]
    lazy["a"] = plain["a"] = "new"  # a key written keeps its place
    assert list(lazy.items()) == list(plain.items()) and lazy == plain and built == ["b"]
    assert lazy.pop("b") == plain.pop("b") and list(lazy) == list(plain)
    with pytest.raises(KeyError):
        lazy["b"]
    assert lazy.copy() == plain and lazy != {**plain, "d": 1}


def _taken():
    state = new_state()
    play(state, steps())
    ids = EventIds()
    ids.consistent("e" * 64, {"a": 1})
    return json.loads(json.dumps(planner_snapshot.take({"live": state}, holds=state.holds,
                                                       plans={}, event_ids=ids)))


def _spoiled(path, value):
    """A whole snapshot with one part replaced (as if edited by hand)."""
    body = _taken()
    *parents, last = path
    where = body
    for key in parents:
        where = where[key]
    where[last] = value(where[last]) if callable(value) else value
    return body


def test_a_capture_encoded_later_is_the_state_when_it_was_captured():
    """The planner captures between two records and goes on while a thread
    encodes: what it changes after the capture is not in the snapshot."""
    stream = steps()
    for cut in range(0, len(stream), 3):
        state = new_state()
        play(state, stream[:cut])
        captured = planner_snapshot.capture({"live": state}, holds=state.holds, plans={})
        now = json.dumps(planner_snapshot.take({"live": state}, holds=state.holds, plans={}))
        play(state, stream[cut:])
        assert json.dumps(planner_snapshot.encode(captured)) == now, f"cut at step {cut}"


@pytest.mark.parametrize("body", [
    None, [], {}, {"format": 99}, {"format": 1}, {"format": 2},
    {"format": 2, "routes": [], "holds": {}, "plans": [], "event_ids": {
        "id": [], "digest": "", "digest_size": 0}, "namespaces": {"live": {"headers": 5}}},
    _spoiled(("format",), 1),
    _spoiled(("event_ids", "digest"), lambda d: d[:-2]),
    _spoiled(("event_ids", "digest_size"), "16"),
    _spoiled(("namespaces", "live", "names"), lambda n: n[:-1]),
    _spoiled(("namespaces", "live", "names"), lambda n: [*n[:-1], 5]),
    _spoiled(("namespaces", "live", "exposures", "since"), lambda n: n[:-1]),
    _spoiled(("namespaces", "live", "exposures", "event"), lambda e: [*e[:-1], ["~", "x", 1]]),
    _spoiled(("namespaces", "live", "headers", "value"), lambda h: [*h[:-1], ["!"]]),
    _spoiled(("namespaces", "live", "candidates", "route"), lambda r: [*r[:-1], 10**6]),
    _spoiled(("routes",), lambda r: [{**r[0], "also": 0}, *r[1:]]),
    _spoiled(("namespaces", "live", "l3_candidates"), lambda c: [c[0][:-1], *c[1:]]),
    _spoiled(("blocks", 0), lambda b: [*b[:-1], ["~", "x", 1]]),
    _spoiled(("blocks", 1), lambda b: [["=", {"header": "="}]] * len(b)),
    _spoiled(("blocks",), lambda b: b[:-1]),
    _spoiled(("block_rows",), 7),
])
def test_a_snapshot_that_cannot_be_read_is_refused_whole(body):
    with pytest.raises(planner_snapshot.SnapshotInvalid):
        planner_snapshot.restore(body, **SETTINGS)


def _planner(tmp_path):
    from calstream.daemon.doers.planner_loop import Planner
    from calstream.daemon.operations.config import Config
    from calstream.daemon.operations.metrics import Metrics
    from calstream.topics.catalog import Topics

    cfg = Config(work_dir=tmp_path, companion_wait=SETTINGS["companion_wait"],
                 stage3_settle=SETTINGS["level3_settle"],
                 stage3_quiet_period=SETTINGS["level3_quiet_period"],
                 stage3_stage2_wait=SETTINGS["level3_stage2_wait"])
    return Planner(cfg, publisher=None, metrics=Metrics(), topics=Topics())


def _snapshot_at_half(tmp_path):
    """The whole stream played (decisions per step), and a planner's snapshot
    taken on disk after its first half: (stream, whole, per_step, cut)."""
    import anyio

    from calstream.daemon.doers import planner_restore

    stream = steps()
    whole = new_state()
    per_step = [play(whole, [step]) for step in stream]
    cut = len(stream) // 2
    first = _planner(tmp_path)
    play(first.state, stream[:cut])
    first.positions = {("calstream.products", 0): cut}
    anyio.run(planner_restore.take_snapshot, first)
    return stream, whole, per_step, cut


@pytest.mark.parametrize("spoil", [None, "corrupt", "missing", "other version"])
def test_the_planner_restores_its_snapshot_or_falls_back_to_the_same_decisions(tmp_path, spoil):

    from calstream.daemon.doers import planner_restore, planner_snapshots

    stream, whole, per_step, cut = _snapshot_at_half(tmp_path)
    path = planner_snapshots.snapshot_path(tmp_path)
    if spoil == "corrupt":
        path.write_bytes(path.read_bytes()[:-3] + b"}}}")
    elif spoil == "missing":
        path.unlink()
    elif spoil == "other version":
        head, body = path.read_bytes().split(b"\n", 1)
        path.write_bytes(head.replace(b'"calstream_version": "', b'"calstream_version": "0.') +
                         b"\n" + body)
    second = _planner(tmp_path)
    used = planner_restore.load_snapshot(second)
    assert used == (spoil is None)
    if used:
        assert second.positions == {("calstream.products", 0): cut}
        rest, expected = play(second.state, stream[cut:]), per_step[cut:]
    else:  # the fallback: every record again, from the beginning
        assert second.positions == {} and second.state.exposures == {}
        rest, expected = play(second.state, stream), per_step
    assert comparable(rest) == comparable([e for emits in expected for e in emits])
    assert _final(second.state) == _final(whole)


def test_a_restored_state_orders_with_todays_step_parameters():
    """Parameters are configuration, not state: a restart after the operator
    changed them orders stage 2 and 3 with the new ones."""
    from calstream.steps.step_parameters import StepParameters

    first = new_state()
    play(first, steps())
    body = json.loads(json.dumps(planner_snapshot.take(
        {"live": first}, holds=first.holds, plans={}, event_ids=EventIds())))
    configured = StepParameters(steps={"calwebb_image3": {"tweakreg": {"abs_refcat": ""}}})
    states, *_ = planner_snapshot.restore(body, **SETTINGS, step_parameters=configured)
    assert states["live"].step_parameters is configured
    assert states["live"].stage3.step_parameters is configured


def test_a_snapshot_is_taken_at_once_after_a_rebuild_not_after_a_restore(tmp_path):
    """After a rebuild the next start must not rebuild again; after a
    snapshot's restore the tail was short, and encoding at once would read
    every block the restore left unread."""
    from calstream.daemon.doers import planner_restore

    planner = _planner(tmp_path)
    planner.caught_up, planner.records_seen = True, 5
    assert planner_restore.snapshot_due(planner)
    planner.restored_from = {"snapshot": "snapshot.json", "taken_at": 0.0, "bytes": 1}
    assert not planner_restore.snapshot_due(planner)


def test_a_snapshot_of_a_restored_state_is_read_from_the_blocks_it_left_unread(tmp_path):
    """Restored from the file (blocks read when first needed), snapshotted
    again before any decision read a record, restored again: the same
    decisions as the whole run."""
    import anyio

    from calstream.daemon.doers import planner_restore

    stream, whole, per_step, cut = _snapshot_at_half(tmp_path)
    second = _planner(tmp_path)
    assert planner_restore.load_snapshot(second) and _built(second.state) == 0
    anyio.run(planner_restore.take_snapshot, second)
    assert _built(second.state) == 0  # the encoder read the blocks, nothing was built
    third = _planner(tmp_path)
    assert planner_restore.load_snapshot(third)
    rest = play(third.state, stream[cut:])
    assert comparable(rest) == comparable([e for emits in per_step[cut:] for e in emits])
    assert _final(third.state) == _final(whole)
    assert _records(third.state) == _records(whole)


def run_until_rebuilt(tmp_path, stream, whole):
    """The planner run under ``rebuilding_when_unreadable`` with a snapshot
    in ``tmp_path`` whose spoiled block a decision reads: each run's
    load_snapshot result, the starts reported and the unreadable counts. A
    run from the snapshot must fail; the rebuild must decide as ``whole``."""
    import anyio

    from calstream.daemon.doers import planner_rebuilds, planner_restore

    runs, started, unreadable = [], [], []

    class Status:
        def started(self, value=None):
            started.append(value)

    async def run_once(status):
        planner = _planner(tmp_path)
        runs.append(planner_restore.load_snapshot(planner))
        status.started()
        if runs[-1]:
            _records(planner.state)  # a decision reads every record: the spoiled block too
            raise AssertionError("the spoiled block was read without complaint")
        play(planner.state, stream)
        assert _final(planner.state) == _final(whole)

    anyio.run(lambda: planner_rebuilds.rebuilding_when_unreadable(
        run_once, str(tmp_path), lambda: unreadable.append(1), lambda c: None,
        task_status=Status()))
    return runs, started, unreadable


def test_a_snapshot_found_unreadable_late_is_deleted_and_the_planner_rebuilds(tmp_path):
    """A block spoiled on disk with the file's digest made right again passes
    the check at start and fails when a decision first reads it: the planner
    is run again (no operator), rebuilds from the records and decides as the
    whole run did; its start is reported once."""
    import hashlib

    from calstream.daemon.doers import planner_snapshots

    stream, whole, _, _ = _snapshot_at_half(tmp_path)
    path = planner_snapshots.snapshot_path(tmp_path)
    head, data = path.read_bytes().split(b"\n", 1)
    data = data[:-4] + b"oops"
    envelope = {**json.loads(head), "sha256": hashlib.sha256(data).hexdigest()}
    path.write_bytes(json.dumps(envelope).encode() + b"\n" + data)
    runs, started, unreadable = run_until_rebuilt(tmp_path, stream, whole)
    assert runs == [True, False] and started == [None] and unreadable == [1]
    assert not path.exists()
