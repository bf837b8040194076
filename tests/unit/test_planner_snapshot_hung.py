"""The planner's snapshot on a work directory whose storage stops answering
(a hard NFS mount whose server is away): its write and its read at start ran
in anyio's threads, untimed: the planner stood at its next snapshot for
ever, unseen, a start froze the same way, and a stop of the daemon waited
for the thread. Now a write past its time is skipped (work_dir_hung: warned,
parked after its retries) and the planner goes on; the next is written once
the directory answers; a read past its time is the full rebuild; a stop
ends meanwhile. (A real thread held until the test lets it go, real files.)"""

import os
import threading

import anyio
import pytest

from calstream.daemon.doers import planner_rebuilds, planner_restore, planner_snapshots
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.doers.snapshot_files import SnapshotFiles
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.topics.catalog import Topics

pytestmark = pytest.mark.anyio
HELD = 10.0  # how long a silent call is held at most: a bound for a broken test



async def reached(blocked: list) -> None:
    """Until the call left behind has reached the silent mount: it is left
    behind after its time wherever its thread was, and on a loaded machine
    it may get there only after that (a CI run, session 45)."""
    with anyio.fail_after(10):
        while not blocked:
            await anyio.sleep(0.02)

@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def silent(tmp_path, monkeypatch):
    """The work directory's mount, silent once ``silence`` is set and until
    ``answers`` is: a file opened under it blocks (in the thread opening it);
    ``returned`` once such a call has returned."""
    work = tmp_path / "work"
    silence, answers, blocked, returned = threading.Event(), threading.Event(), [], []
    real = os.open

    def open_(path, *args, **kw):
        if silence.is_set() and os.fspath(path).startswith(os.fspath(work)) \
                and not answers.is_set():
            blocked.append(path)
            answers.wait(HELD)
            returned.append(path)
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "open", open_)
    yield work, silence, answers, blocked, returned
    answers.set()


def planner_at(work, seconds=0.2) -> Planner:
    cfg = load(None, env={}, flags={"work_dir": work, "max_attempts": 2,
                                    "retry_backoff": 0.01, "park_recheck_seconds": 0.05})
    planner = Planner(cfg, publisher=None, metrics=Metrics(), topics=Topics())
    planner.snapshot_files = SnapshotFiles(work, seconds=seconds)
    planner.positions = {("calstream.products", 0): 7}
    planner.records_seen = 7
    return planner


def parked_total(planner) -> float:
    return planner.metrics.parked_total.labels(stage="planner",
                                               cause="work_dir_hung")._value.get()


async def test_a_snapshot_on_a_silent_work_dir_is_skipped_and_written_once_it_answers(silent):
    work, silence, answers, blocked, _ = silent
    planner = planner_at(work)
    silence.set()
    with anyio.fail_after(HELD / 2):  # untimed, it waited for the mount (HELD)
        assert await planner_restore.take_snapshot(planner) == 0
        assert await planner_restore.take_snapshot(planner) == 0  # no second thread
    assert len(blocked) == 1 and planner.snapshot_parking.failures == 2
    assert parked_total(planner) == 1  # parked after its retries: a metric
    assert not planner_snapshots.snapshot_path(work).exists()
    assert planner.last_snapshot[1] == 0  # not taken: still due
    answers.set()  # the mount answers
    with anyio.fail_after(HELD / 2):
        while planner.snapshot_files.still_hung():
            await anyio.sleep(0.02)
        assert await planner_restore.take_snapshot(planner) > 0
    assert planner.snapshot_parking.failures == 0
    assert planner_snapshots.read(work).offsets == {("calstream.products", 0): 7}


async def test_a_stop_while_the_snapshot_is_written_on_a_silent_work_dir_ends(silent):
    work, silence, answers, blocked, returned = silent
    planner = planner_at(work, seconds=60.0)  # within its time: the stop alone ends it
    silence.set()
    async with anyio.create_task_group() as tg:
        tg.start_soon(planner_restore.take_snapshot, planner)
        while not blocked:
            await anyio.sleep(0.02)
        tg.cancel_scope.cancel()  # the daemon's stop
    assert not returned  # ended without waiting for the mount


async def test_a_snapshot_unread_at_start_is_the_full_rebuild(silent, caplog):
    work, silence, answers, blocked, returned = silent
    await planner_restore.take_snapshot(planner_at(work))  # a good snapshot, written
    assert planner_snapshots.snapshot_path(work).exists()
    planner = planner_at(work)
    planner.positions = {}
    silence.set()
    with anyio.fail_after(HELD / 2):  # untimed, it waited for the mount (HELD)
        assert await planner_restore.load_snapshot_timed(planner) is False
    await reached(blocked)
    assert not returned
    assert planner.restored_from is None and planner.positions == {}  # as a rebuild starts
    assert planner.snapshot_parking.failures == 1  # none written until it answers
    assert "snapshot unread" in caplog.text


async def test_a_snapshot_left_hung_names_the_snapshot_not_the_inbox(silent):
    """The snapshot's calls are timed by the door's mechanism (FileReads):
    its threads were named "inbox-read" and its line said "or too many
    reads of the inbox", sending an operator to the wrong storage."""
    work, silence, answers, blocked, _ = silent
    planner = planner_at(work)
    silence.set()
    with anyio.fail_after(HELD / 2):
        assert await planner_restore.take_snapshot(planner) == 0
    await reached(blocked)
    assert "calls on the planner's snapshot" in {t.name for t in threading.enumerate()}
    text = str(planner.snapshot_files.still_hung())
    assert "planner's snapshot" in text and "inbox" not in text


@pytest.fixture
def silent_unlink(tmp_path, monkeypatch):
    """The work directory's mount, silent until ``answers`` is set: the
    snapshot removed or renamed blocks (in the thread removing it; a
    snapshot's write, which removes its temporary and renames by os.replace,
    is not held); the names of the threads that did, and the held calls
    that have returned."""
    work = tmp_path / "work"
    answers, blocked, returned = threading.Event(), [], []
    snapshot = os.fspath(planner_snapshots.snapshot_path(work))

    def held(real):
        def call(path, *args, **kw):
            if os.fspath(path) != snapshot or answers.is_set():
                return real(path, *args, **kw)
            blocked.append(threading.current_thread().name)
            answers.wait(HELD)
            try:
                return real(path, *args, **kw)
            finally:
                returned.append(path)
        return call

    monkeypatch.setattr(os, "unlink", held(os.unlink))
    monkeypatch.setattr(os, "rename", held(os.rename))
    yield work, answers, blocked, returned
    answers.set()


async def test_an_unreadable_snapshot_deleted_on_a_silent_work_dir_holds_no_planner(
        silent_unlink, monkeypatch, caplog):
    """A snapshot found unreadable late was deleted on the planner's loop,
    untimed: on a silent work directory that loop stood still for ever (its
    beat too), and no new planner rebuilt. Now the deletion is timed and
    the new planner runs while it is still held."""
    from functools import partial

    from calstream.daemon.deciders.snapshot_blocks import SnapshotInvalid

    work, answers, blocked, returned = silent_unlink
    path = planner_snapshots.snapshot_path(work)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a snapshot whose block 3 is spoiled")
    SnapshotFiles(work).restored(planner_snapshots.read_file(work))  # as load_snapshot does
    monkeypatch.setattr(planner_rebuilds, "SnapshotFiles", partial(SnapshotFiles, seconds=0.2))
    runs, rebuilt = [], []

    async def run_once(status):
        runs.append(len(returned))  # deletions returned by the time this planner ran
        if len(runs) == 1:
            raise SnapshotInvalid("snapshot block 3 unreadable")

    with anyio.fail_after(HELD / 2):  # a bound for a broken test
        await planner_rebuilds.rebuilding_when_unreadable(
            run_once, str(work), lambda: rebuilt.append(1), lambda c: None)
    assert runs == [0, 0] and rebuilt == [1]  # the rebuild ran while the deletion hung
    assert blocked == ["calls on the planner's snapshot"]
    assert "not deleted" in caplog.text and "snapshot's deletion hung" in caplog.text
    answers.set()  # the mount answers: the deletion left behind lands
    with anyio.fail_after(HELD / 2):
        while path.exists():
            await anyio.sleep(0.02)



async def test_a_deletion_that_lands_late_leaves_the_rebuilt_planner_s_snapshot(
        silent_unlink, monkeypatch):
    """The unreadable snapshot's deletion, left behind on a silent mount,
    landed when the mount answered, after the rebuilt planner had written
    its first snapshot: it removed that one, whatever held the name by
    then (until session 46), and the next start rebuilt once more. Now it
    removes only the snapshot the failed state came from."""
    from functools import partial

    from calstream.daemon.deciders.snapshot_blocks import SnapshotInvalid

    work, answers, blocked, returned = silent_unlink
    path = planner_snapshots.snapshot_path(work)
    assert await planner_restore.take_snapshot(planner_at(work)) > 0  # the one to fail
    monkeypatch.setattr(planner_rebuilds, "SnapshotFiles", partial(SnapshotFiles, seconds=0.2))
    rebuilt = []

    async def run_once(status):
        planner = planner_at(work)
        if not rebuilt:  # restored from the snapshot: its state fails late
            rebuilt.append(planner)
            assert await planner_restore.load_snapshot_timed(planner)
            raise SnapshotInvalid("snapshot block 3 unreadable")
        await reached(blocked)  # the deletion is left on the silent mount
        planner.records_seen = 9  # rebuilt (its read hung too), and its first snapshot:
        assert await planner_restore.take_snapshot(planner) > 0  # written by os.replace

    with anyio.fail_after(HELD / 2):
        await planner_rebuilds.rebuilding_when_unreadable(
            run_once, str(work), lambda: None, lambda c: None)
    written = path.read_bytes()
    answers.set()  # the mount answers: the deletion left behind lands
    with anyio.fail_after(HELD / 2):
        while not returned or path.with_name(path.name + ".unreadable").exists():
            await anyio.sleep(0.02)
    assert path.exists() and path.read_bytes() == written


async def test_the_snapshot_written_from_a_restored_state_is_the_one_deleted(tmp_path):
    """A snapshot written from a restored state carries the blocks it left
    unread as stored (deciders/snapshot_reuse.py), a spoiled one too: when
    that state fails, the snapshot it wrote is deleted, not only the one it
    was restored from (else the next planner restored the same block)."""
    work = tmp_path / "work"
    assert await planner_restore.take_snapshot(planner_at(work)) > 0
    restored = planner_at(work)
    assert await planner_restore.load_snapshot_timed(restored)
    restored.records_seen = 9
    assert await planner_restore.take_snapshot(restored) > 0
    assert await SnapshotFiles(work).delete()
    assert not planner_snapshots.snapshot_path(work).exists()
    assert not await SnapshotFiles(work).delete()  # nothing holds a state now


async def test_snapshots_the_disk_refused_leave_the_restored_one_to_delete(tmp_path):
    """A disk that refuses the snapshot's writes (full, read-only) for a few
    retries: each refused write pushed the snapshot the state was restored
    from out of those that may be the file (STATE_KEPT), though it still
    was; when that state then failed late, its snapshot was left at the name
    (until session 46), and every start restored it again until a write
    went through. A write that raised changed no file: it is not counted."""
    from calstream.daemon.doers import snapshot_files
    from calstream.daemon.doers.durable_files import temporary_path

    work = tmp_path / "work"
    assert await planner_restore.take_snapshot(planner_at(work)) > 0
    assert await planner_restore.load_snapshot_timed(planner_at(work))  # the state's snapshot
    path = planner_snapshots.snapshot_path(work)
    temporary_path(path).mkdir()  # a write's temporary cannot be made: each write raises
    files = SnapshotFiles(work)
    for n in range(snapshot_files.STATE_KEPT):
        with pytest.raises(OSError):
            await files.put(planner_snapshots.pack({"n": n}, offsets={}))
    assert await files.delete()  # the state fails late: its snapshot goes
    assert not path.exists()


async def test_a_file_aside_that_cannot_be_read_is_put_back(tmp_path, monkeypatch):
    """The file taken from the name is read to know whose it is: a read
    that failed (EIO on a sick disk) raised out of the deletion and left it
    at snapshot.json.unreadable, the rebuilt planner's snapshot too (until
    session 46). Whose it is unknown, it is put back: a start reads it again."""
    from calstream.daemon.doers import snapshot_files

    work = tmp_path / "work"
    assert await planner_restore.take_snapshot(planner_at(work)) > 0
    path = planner_snapshots.snapshot_path(work)
    written = path.read_bytes()

    def sick(_path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(snapshot_files, "open_regular_file", sick)
    assert not snapshot_files._remove_if(path, [b"another"])
    assert path.read_bytes() == written
    assert not path.with_name(path.name + ".unreadable").exists()
