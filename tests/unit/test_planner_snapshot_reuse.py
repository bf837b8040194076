"""A snapshot that writes its unchanged blocks as the last one stored them
still restores to the decisions of the whole run (deciders/snapshot_reuse.py).

Blocks of 2 rows here (1,000 in the planner), so the recorded stream's
nine exposures fill several blocks per column and a tail changes some of
them, not all.
"""

from __future__ import annotations

import hashlib
import json

import anyio
import pytest

from calstream.daemon.deciders import planner_snapshot, snapshot_blocks, snapshot_reuse
from calstream.daemon.doers import planner_restore, planner_snapshots

from .planner_stream import SETTINGS, comparable, new_state, play, steps
from .test_planner_snapshot import _built, _final, _kept, _planner, _records, run_until_rebuilt


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    for module in (snapshot_blocks, snapshot_reuse, planner_snapshot):
        monkeypatch.setattr(module, "BLOCK_ROWS", 2)


def _snapshot(planner, cut: int) -> tuple[int, int]:
    """The planner's snapshot on disk, covering ``cut`` steps: (blocks reused, blocks)."""
    planner.positions = {("calstream.products", 0): cut}
    writers = []
    original = planner_restore.BlockWriter

    def recording(reuse):
        writers.append(original(reuse))
        return writers[-1]

    planner_restore.BlockWriter = recording
    try:
        anyio.run(planner_restore.take_snapshot, planner)
    finally:
        planner_restore.BlockWriter = original
    return writers[0].reused, len(writers[0].blocks)


def _whole():
    stream = steps()
    whole = new_state()
    return stream, whole, [play(whole, [step]) for step in stream]


def _restored(tmp_path, cut: int):
    planner = _planner(tmp_path)
    assert planner_restore.load_snapshot(planner)
    assert planner.positions == {("calstream.products", 0): cut}
    return planner


def test_a_snapshot_after_a_restore_and_a_tail_reuses_blocks_and_decides_the_same(tmp_path):
    """Snapshot at one cut, restore, play a tail, snapshot again (the blocks
    the tail did not touch written as stored), restore that: every cut and
    tail length ends with the whole run's decisions and records."""
    stream, whole, per_step = _whole()
    reused_some = encoded_some = False
    for cut in range(len(stream) + 1):
        for tail in sorted({0, 1, 3, len(stream) - cut}):
            if cut + tail > len(stream):
                continue
            first = _planner(tmp_path)
            play(first.state, stream[:cut])
            _snapshot(first, cut)
            second = _restored(tmp_path, cut)
            play(second.state, stream[cut:cut + tail])
            reused, blocks = _snapshot(second, cut + tail)
            if tail == 0:  # nothing changed: every block as stored
                assert reused == blocks and _built(second.state) == 0, (cut, tail)
            reused_some |= 0 < reused
            encoded_some |= reused < blocks
            third = _restored(tmp_path, cut + tail)
            assert _kept(third.state) == _kept(second.state), (cut, tail)
            rest = play(third.state, stream[cut + tail:])
            expected = [e for emits in per_step[cut + tail:] for e in emits]
            assert comparable(rest) == comparable(expected), (cut, tail)
            assert _final(third.state) == _final(whole), (cut, tail)
            assert _records(third.state) == _records(whole), (cut, tail)
    assert reused_some and encoded_some


def test_snapshots_of_a_running_planner_reuse_the_blocks_it_did_not_change(tmp_path):
    """No restart: each snapshot after the first writes only the blocks whose
    records the planner replaced or added; the last one restores to the
    whole run's state."""
    stream, whole, per_step = _whole()
    planner = _planner(tmp_path)
    reused = []
    for cut in range(0, len(stream) + 1, 4):
        play(planner.state, stream[cut - 4 if cut else 0:cut])
        reused.append(_snapshot(planner, cut))
        restored = _restored(tmp_path, cut)
        assert _kept(restored.state) == _kept(planner.state), cut
        assert _records(restored.state) == _records(planner.state), cut
        rest = play(restored.state, stream[cut:])
        assert comparable(rest) == comparable([e for emits in per_step[cut:] for e in emits])
        assert _final(restored.state) == _final(whole), cut
    assert reused[0][0] == 0 and any(0 < n < blocks for n, blocks in reused[1:])


def test_a_body_in_memory_reuses_nothing():
    """Blocks given whole in memory (not read from a file) have no stored
    bytes: a restore from them seeds nothing, every block is encoded."""
    stream = steps()
    state = new_state()
    play(state, stream)
    text = json.dumps(planner_snapshot.take({"live": state}, holds=state.holds, plans={}))
    reuse = snapshot_reuse.BlockCache()
    states, *_ = planner_snapshot.restore(json.loads(text), **SETTINGS, reuse=reuse)
    writer = snapshot_reuse.BlockWriter(reuse)
    again = planner_snapshot.encode(planner_snapshot.capture(
        states, holds=state.holds, plans={}), writer)
    assert writer.reused == 0 and len(writer.blocks) > 4 and json.dumps(again) == text


def _spoil_last_block(path) -> None:
    """The last block's bytes spoiled, the file's digest made right again:
    the check at start passes, reading the block fails."""
    head, data = path.read_bytes().split(b"\n", 1)
    data = data[:-4] + b"oops"
    envelope = {**json.loads(head), "sha256": hashlib.sha256(data).hexdigest()}
    path.write_bytes(json.dumps(envelope).encode() + b"\n" + data)


def _restored_with_a_spoiled_block(tmp_path):
    """Half the stream snapshotted, the file's last block spoiled, and a
    planner restored from it (the spoiled block not read yet)."""
    stream, whole, _ = _whole()
    cut = len(stream) // 2
    first = _planner(tmp_path)
    play(first.state, stream[:cut])
    while len(first.state.stage3.calibrated) % 2:  # the last block full: two rows
        play(first.state, stream[cut:cut + 1])
        cut += 1
    _snapshot(first, cut)
    path = planner_snapshots.snapshot_path(tmp_path)
    _spoil_last_block(path)
    return stream, whole, cut, path, _restored(tmp_path, cut)


def test_a_spoiled_block_reused_as_stored_is_still_found_and_the_planner_rebuilds(tmp_path):
    """A spoiled block nobody read is written into the next snapshot as it
    was stored (it is not read to be reused): the start after that one
    finds it when a decision reads it, deletes the snapshot and rebuilds
    from the records, to the whole run's decisions."""
    stream, whole, cut, path, second = _restored_with_a_spoiled_block(tmp_path)
    reused, blocks = _snapshot(second, cut)
    assert reused == blocks
    assert path.read_bytes().split(b"\n", 1)[1].endswith(b"oops")
    runs, _, unreadable = run_until_rebuilt(tmp_path, stream, whole)
    assert runs == [True, False] and unreadable == [1] and not path.exists()


def test_a_spoiled_block_is_refused_when_its_rows_are_encoded_again(tmp_path):
    """A tail that replaces a row of the spoiled block: encoding the block
    again reads its other row, which fails as a decision's read does
    (SnapshotInvalid: the planner rebuilds), and no snapshot is written."""
    stream, whole, cut, path, second = _restored_with_a_spoiled_block(tmp_path)
    before = path.read_bytes()
    calibrated = second.state.stage3.calibrated
    assert len(calibrated) % 2 == 0  # the last block (the spoiled one) has two rows
    last = list(calibrated)[-1]
    calibrated[last] = whole.stage3.calibrated[last]  # a record not read from the block
    with pytest.raises(planner_snapshot.SnapshotInvalid):
        _snapshot(second, cut)
    assert _built(second.state) == 1
    assert not path.exists() or path.read_bytes() == before


def test_each_namespace_reuses_its_own_blocks(tmp_path):
    """Two namespaces (live and a replay) in one snapshot: after a restore,
    a namespace changed by a tail has its blocks encoded again, the other's
    are all reused, and both restore to their own records."""
    stream = steps()
    cut = len(stream) // 2
    live, replay = new_state(), new_state()
    play(live, stream)
    play(replay, stream[:cut])
    states = {"live": live, "replay": replay}

    def through_file(states, reuse=None):
        writer, stored = snapshot_reuse.BlockWriter(reuse), []
        body = planner_snapshot.encode(planner_snapshot.capture(states, holds={}, plans={}),
                                       writer)
        planner_snapshots.write(tmp_path, body, offsets={}, stored=stored)
        cache = snapshot_reuse.BlockCache()
        restored, *_ = planner_snapshot.restore(planner_snapshots.read(tmp_path).body,
                                                **SETTINGS, reuse=cache)
        return restored, cache, body

    def reused(body, ns):
        s = body["namespaces"][ns]
        numbers = [*s["headers"]["value"], *s["exposures"]["event"],
                   *s["arrived"]["products"], *s["calibrated"]["event"]]
        return [type(body["blocks"][n]) is snapshot_reuse.Stored for n in numbers]

    first, cache, body = through_file(states)
    assert not any(reused(body, "live") + reused(body, "replay"))
    play(first["replay"], stream[cut:])
    second, _, body = through_file(first, cache)
    assert all(reused(body, "live")) and not all(reused(body, "replay"))
    for ns in ("live", "replay"):
        assert _records(second[ns]) == _records(live), ns
        assert _kept(second[ns]) == _kept(live), ns
