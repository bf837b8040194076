"""The snapshot file: atomic, and ignored (with one warning) whenever it
cannot be trusted -- missing, another format or version, too old, corrupt."""

from __future__ import annotations

import json
import logging
import time

import pytest

from calstream.daemon.doers import planner_snapshots

BODY = {"format": 1, "namespaces": {}, "x": list(range(100))}
OFFSETS = {("products", 0): 12, ("products", 1): 7, ("holds", 0): 3}


def test_written_then_read_back_with_its_offsets(tmp_path):
    size = planner_snapshots.write(tmp_path, BODY, offsets=OFFSETS, calstream_version="v1")
    snap = planner_snapshots.read(tmp_path, calstream_version="v1")
    assert snap.body == BODY and snap.offsets == OFFSETS and snap.size == size
    assert time.time() - snap.taken_at < 60
    assert [p.name for p in (tmp_path / "planner").iterdir()] == ["snapshot.json"]  # no temp left


def _corrupt(path):
    data = path.read_bytes()
    path.write_bytes(data[:-5] + b"00000")


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-20])


def _bad_envelope(path):
    path.write_bytes(b"{not json\n" + path.read_bytes().split(b"\n", 1)[1])


def _other_format(path):
    head, body = path.read_bytes().split(b"\n", 1)
    envelope = json.loads(head)
    envelope["format"] = 99
    path.write_bytes(json.dumps(envelope).encode() + b"\n" + body)


def _forged_envelope(**changes):
    """An envelope edited by hand (its body and sha256 untouched)."""
    def spoil(path):
        head, body = path.read_bytes().split(b"\n", 1)
        envelope = {**json.loads(head), **changes}
        path.write_bytes(json.dumps(envelope).encode() + b"\n" + body)
    return spoil


def _not_compressed(path):
    """A body that is whole (its size and sha256 right) but not what the
    envelope says: plain JSON, as format 1 wrote it."""
    import hashlib

    head, _ = path.read_bytes().split(b"\n", 1)
    data = json.dumps(BODY).encode()
    envelope = {**json.loads(head), "size": len(data), "raw_size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}
    path.write_bytes(json.dumps(envelope).encode() + b"\n" + data)


@pytest.mark.parametrize("spoil,why", [
    (None, "no snapshot"), (_corrupt, "corrupt"), (_truncate, "corrupt"),
    (_bad_envelope, "envelope"), (_other_format, "format"),
    (_forged_envelope(offsets=[["products", 0, -5]]), "envelope"),
    (_forged_envelope(offsets=[["products", -1, 5]]), "envelope"),
    (_forged_envelope(taken_at=float("inf")), "envelope"),
    (_forged_envelope(taken_at=1e300), "envelope"),  # door fuzz: gmtime raised OverflowError
    (_forged_envelope(raw_size=10**30), "cannot be read"),  # door fuzz: OverflowError
    (_forged_envelope(raw_size=10), "cannot be read"),
    (_forged_envelope(raw_size=10**12), "cannot be read"),
    (_forged_envelope(raw_size=None), "cannot be read"),
    (_not_compressed, "cannot be read")])
def test_an_untrustworthy_snapshot_is_ignored_with_one_warning(tmp_path, caplog, spoil, why):
    if spoil is not None:
        planner_snapshots.write(tmp_path, BODY, offsets=OFFSETS, calstream_version="v1")
        spoil(planner_snapshots.snapshot_path(tmp_path))
    with caplog.at_level(logging.INFO, logger="calstream.planner"):
        assert planner_snapshots.read(tmp_path, calstream_version="v1") is None
    said = [r for r in caplog.records if why in r.getMessage()]
    assert len(said) == 1


def test_another_calstream_version_or_an_old_snapshot_is_ignored(tmp_path, caplog):
    planner_snapshots.write(tmp_path, BODY, offsets=OFFSETS, calstream_version="v1")
    with caplog.at_level(logging.WARNING, logger="calstream.planner"):
        assert planner_snapshots.read(tmp_path, calstream_version="v2") is None
        time.sleep(0.05)
        assert planner_snapshots.read(tmp_path, calstream_version="v1", max_age=0.01) is None
    assert "calstream v1" in caplog.text and "ago" in caplog.text
    assert planner_snapshots.read(tmp_path, calstream_version="v1") is not None


def test_blocks_are_stored_apart_and_read_when_asked_for(tmp_path):
    """A body's ``blocks`` are stored each on its own and parsed only when
    read; a block that cannot be read then is a ValueError."""
    import hashlib

    body = {**BODY, "blocks": [[{"row": n}] * 3 for n in range(4)]}
    planner_snapshots.write(tmp_path, body, offsets=OFFSETS, calstream_version="v1")
    snap = planner_snapshots.read(tmp_path, calstream_version="v1")
    blocks = snap.body.pop("blocks")
    assert snap.body == BODY and len(blocks) == 4 and blocks[2] == [{"row": 2}] * 3
    path = planner_snapshots.snapshot_path(tmp_path)
    head, data = path.read_bytes().split(b"\n", 1)
    data = data[:-4] + b"oops"  # the last block spoiled, its digest made right again
    envelope = {**json.loads(head), "sha256": hashlib.sha256(data).hexdigest()}
    path.write_bytes(json.dumps(envelope).encode() + b"\n" + data)
    blocks = planner_snapshots.read(tmp_path, calstream_version="v1").body["blocks"]
    assert blocks[0] == [{"row": 0}] * 3
    with pytest.raises(ValueError):
        blocks[3]
    # Not deleted by the read (on the planner's loop, untimed, it held that
    # loop on a silent work directory): by the rebuild, timed
    # (test_planner_snapshot_hung.py).
    assert path.exists()


def test_an_offset_of_infinity_is_an_envelope_that_cannot_be_read(tmp_path, caplog):
    """json.loads reads Infinity; int() of it raised OverflowError out of the
    planner's start (door fuzz)."""
    planner_snapshots.write(tmp_path, BODY, offsets=OFFSETS, calstream_version="v1")
    _forged_envelope(offsets=[["products", float("inf"), 0]])(
        planner_snapshots.snapshot_path(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert planner_snapshots.read(tmp_path, calstream_version="v1") is None
    assert "envelope" in caplog.text


def test_a_block_size_beyond_any_is_a_block_that_cannot_be_read():
    """A block's stated size past sys.maxsize raised OverflowError out of the
    decision that first read it, where the planner rebuilds on ValueError
    (door fuzz)."""
    with pytest.raises(ValueError, match="decompressed size"):
        planner_snapshots._inflated(b"x", 10**30)


def test_a_restored_record_its_snapshot_cannot_have_made_is_an_unreadable_state():
    """A sealed snapshot whose body names an exposure no name can be (a
    forger who made its sha256 match): building the record when a decision
    first read it raised BadName, and the valid record being decided was
    dead-lettered for it; now the state is unreadable and the planner
    rebuilds, as for a block (door fuzz)."""
    from calstream.daemon.deciders.restored_records import Rows, seen
    from calstream.daemon.deciders.snapshot_blocks import SnapshotInvalid

    event = {"header": {}, "outputs": [{"suffix": "rate", "path": "/products/x_rate.fits"}]}
    rows = Rows(seen, [[event], [0.0], [None], [None]])
    with pytest.raises(SnapshotInvalid, match="cannot be built"):
        rows("jw01001001001_02101_000\ud80001_nrcb1", 0)


def test_a_snapshot_of_another_deployment_s_topics_is_ignored(tmp_path, caplog):
    ours = {(f"p.{t}", n): o for (t, n), o in OFFSETS.items()}
    planner_snapshots.write(tmp_path, BODY, offsets=ours, calstream_version="v1",
                            topic_prefix="p.")
    assert planner_snapshots.read(tmp_path, calstream_version="v1", topic_prefix="p.")
    with caplog.at_level(logging.WARNING, logger="calstream.planner"):
        assert planner_snapshots.read(tmp_path, calstream_version="v1", topic_prefix="q.") is None
    assert "another deployment" in caplog.text
    # Named with this prefix, offsets of topics outside it: not this deployment's.
    planner_snapshots.write(tmp_path, BODY, offsets={**ours, ("q.products", 0): 4},
                            calstream_version="v1", topic_prefix="p.")
    assert planner_snapshots.read(tmp_path, calstream_version="v1", topic_prefix="p.") is None
    # Written before snapshots named their deployment (an upgrade): not known
    # to be this one's, rebuilt once, and said so, not "another deployment".
    planner_snapshots.write(tmp_path, BODY, offsets=ours, calstream_version="v1")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="calstream.planner"):
        assert planner_snapshots.read(tmp_path, calstream_version="v1", topic_prefix="p.") is None
    assert "names no deployment" in caplog.text and "another deployment" not in caplog.text


def _gone_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_part_a_killed_writer_left_is_removed_at_the_next_snapshot(tmp_path):
    """kill -9 (an OOM kill: a snapshot is written when the planner is over its
    memory budget) between writing and renaming leaves a whole snapshot's size
    under a temporary name; a restarted planner has another pid, so without
    this each such kill left one more, until the disk was full."""
    planner_snapshots.write(tmp_path, BODY, offsets=OFFSETS, calstream_version="v1")
    gone = tmp_path / "planner" / f".snapshot.json.{_gone_pid()}.tmp"
    gone.write_bytes(b"x" * 1000)
    live = tmp_path / "planner" / ".snapshot.json.1.tmp"  # pid 1 runs: a write in flight
    live.write_bytes(b"y")
    other = tmp_path / "planner" / ".other.json.1234567.tmp"  # not the snapshot's: not ours
    other.write_bytes(b"z")
    planner_snapshots.write(tmp_path, BODY, offsets=OFFSETS, calstream_version="v1")
    assert not gone.exists()
    assert live.exists() and other.exists()
    assert planner_snapshots.read(tmp_path, calstream_version="v1").body == BODY


def test_a_snapshot_another_user_could_have_written_is_ignored(tmp_path, caplog):
    """Its sha256 proves it whole, not whose: anyone who may write it may
    write a state (orders counted as sent, offsets past records never read).
    One another user owns, or anyone may write, is not taken."""
    import os
    planner_snapshots.write(tmp_path, BODY, offsets=OFFSETS, calstream_version="v1")
    path = planner_snapshots.snapshot_path(tmp_path)
    path.chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="calstream.planner"):
        assert planner_snapshots.read(tmp_path, calstream_version="v1") is None
    assert "anyone may write" in caplog.text
    path.chmod(0o664)  # group-writable, as a volume's fsGroup makes it: taken
    assert planner_snapshots.read(tmp_path, calstream_version="v1") is not None
    if os.geteuid() == 0:  # only root can give a file away
        os.chown(path, 54321, -1)
        assert planner_snapshots.read(tmp_path, calstream_version="v1") is None
        assert "owned by uid 54321" in caplog.text
        planner_snapshots.write(tmp_path, BODY, offsets=OFFSETS, calstream_version="v1")
        assert planner_snapshots.read(tmp_path, calstream_version="v1") is not None
