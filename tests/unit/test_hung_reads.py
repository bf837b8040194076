"""A read of the inbox that never returns (a network mount gone silent):
real threads blocked until the test lets them go, no filesystem needed.
Before, such a read held its file's turn for ever (four of them held the
whole door) and a token of anyio's default thread limiter, which the rest
of the daemon shares."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers import file_reads
from calstream.daemon.doers.file_reads import MOST_HUNG, FileReads, ReadHung

pytestmark = pytest.mark.timeout(60)


class Storage:
    """Reads of the paths in ``dead`` block until ``answer`` is set."""

    def __init__(self, *dead: str) -> None:
        self.dead = set(dead)
        self.answer = threading.Event()
        self.calls: list[str] = []

    def read(self, path: Path) -> str:
        self.calls.append(path.name)
        if path.name in self.dead:
            self.answer.wait(30)
        return f"read {path.name}"


def _run(test) -> None:
    anyio.run(test, backend="asyncio")


def test_a_hung_read_raises_in_its_time_and_is_not_started_again_until_it_returns():
    storage, reads = Storage("dead.fits"), FileReads(2, read_seconds=0.2, of="the inbox")
    dead, alive = Path("/inbox/dead.fits"), Path("/inbox/alive.fits")

    async def test():
        with pytest.raises(ReadHung, match="no answer from its storage within 0.2 s"):
            await reads.timed(storage.read, dead, 0.2)
        assert reads.hung() == 1
        with pytest.raises(ReadHung, match="still not returned"):
            await reads.timed(storage.read, dead, 0.2)
        assert storage.calls == ["dead.fits"], "no second thread for a read still hung"
        assert await reads.timed(storage.read, alive, 0.2) == "read alive.fits"
        storage.answer.set()  # the mount is back
        with anyio.fail_after(10):
            while reads.hung():
                await anyio.sleep(0.01)
        assert await reads.timed(storage.read, dead, 0.2) == "read dead.fits"

    _run(test)


def test_a_dead_mount_costs_a_few_threads_and_none_of_the_daemon_s():
    names = [f"f{i}.fits" for i in range(MOST_HUNG + 3)]
    storage, reads = Storage(*names), FileReads(4, read_seconds=0.2, of="the inbox")
    default = anyio.to_thread.current_default_thread_limiter

    async def test():
        outcomes: list[str] = []

        async def read(name):
            try:
                await reads.timed(storage.read, Path("/inbox") / name, 0.2)
            except ReadHung as exc:
                outcomes.append(str(exc))

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(read, name)
            await anyio.sleep(0.1)  # every read under way, none timed out yet
            assert default().borrowed_tokens == 0, "the daemon's own threads stay free"
        assert len(outcomes) == len(names)
        assert len(storage.calls) == MOST_HUNG, "reads past the bound are not started"
        assert reads.hung() == MOST_HUNG
        with pytest.raises(ReadHung, match="still not returned"):
            await reads.timed(storage.read, Path("/inbox/new.fits"), 0.2)
        storage.answer.set()
        with anyio.fail_after(10):
            while reads.hung():
                await anyio.sleep(0.01)

    _run(test)


def test_a_digest_is_given_the_time_to_read_its_file_at_the_slowest_working_rate():
    seen = []
    reads = FileReads(1, read_seconds=60, of="the inbox")

    async def timed(fn, path, seconds):
        seen.append(seconds)
        return "sha256:x"

    reads.timed = timed
    anyio.run(reads.digest, Path("/inbox/a.fits"), 64 << 30, backend="asyncio")
    assert seen == [60 + (64 << 30) / file_reads.SLOWEST_BYTES_PER_SECOND]


def test_a_read_waiting_for_a_thread_behind_working_reads_is_not_hung():
    # A burst of arrivals starts a step per file, each with its stat: they
    # queue for the door's threads. A read's time is its own: one waiting for
    # a thread behind reads that are slow but answer was called hung (and its
    # file, or the inbox itself, parked as inbox_hung) without being started.
    slow = threading.Event()
    calls: list[str] = []

    def working(path: Path) -> str:  # a busy mount: slow, but it answers
        calls.append(path.name)
        slow.wait(30)
        return f"read {path.name}"

    reads = FileReads(4, read_seconds=0.3, of="the inbox")

    async def test():
        results: dict[str, str] = {}

        async def read(name: str, seconds: float) -> None:
            try:
                results[name] = await reads.timed(working, Path("/inbox") / name, seconds)
            except ReadHung as exc:
                results[name] = str(exc)

        async with anyio.create_task_group() as tg:
            for i in range(MOST_HUNG):  # every thread of the door taken, each within its time
                tg.start_soon(read, f"big{i}.fits", 30.0)
            with anyio.fail_after(10):
                while len(calls) < MOST_HUNG:
                    await anyio.sleep(0.01)
            tg.start_soon(read, "small.fits", 0.3)
            await anyio.sleep(1.0)  # past the small read's time, waiting for a thread
            slow.set()  # the busy reads answer
        assert results["small.fits"] == "read small.fits"
        assert reads.hung() == 0

    _run(test)


def test_a_read_left_hung_does_not_keep_the_stopped_daemon_from_exiting():
    # The daemon's loop ends at a stop; its process then waited at exit for
    # every thread left reading (anyio's worker threads are joined there):
    # a dead mount kept a stopped daemon (and its work directory's lock)
    # until it was killed, a large file's digest until it was hashed.
    import subprocess
    import sys

    program = """if True:
        import threading, anyio
        from pathlib import Path
        from calstream.daemon.doers.file_reads import FileReads, ReadHung
        never = threading.Event()
        async def main():
            try:
                await FileReads(1, read_seconds=0.2, of="the inbox").timed(lambda p: never.wait(), Path("/x"), 0.2)
            except ReadHung:
                print("parked", flush=True)
        anyio.run(main)
    """
    try:
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                              timeout=30)  # a bound for the broken case, not a measure
    except subprocess.TimeoutExpired:  # (subprocess.run has killed it)
        raise AssertionError("the process did not exit: it waits for the hung read") from None
    assert done.returncode == 0 and done.stdout == "parked\n", done.stderr


def test_a_listing_answers_at_each_entry_of_a_directory_s_read(tmp_path, monkeypatch):
    # A directory's read on a network mount answers in batches: one of many
    # thousands of entries takes longer than a read's time as a whole, each
    # batch answering. Told only once the directory was read whole, the
    # listing (FileReads.listing) was called hung.
    import os

    from calstream.daemon.doers.inbox import observer_bridge
    from calstream.daemon.doers.inbox.observer_bridge import InboxScope

    for i in range(4):
        (tmp_path / f"f{i}.fits").write_bytes(b"")
    answers: list[int] = []
    answered_before_each_entry: list[int] = []
    real = os.scandir

    class Listed:  # os.scandir, noting what was answered as each entry comes
        def __init__(self, directory):
            self.entries = real(directory)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.entries.close()

        def __iter__(self):
            for entry in self.entries:
                answered_before_each_entry.append(len(answers))
                yield entry

    monkeypatch.setattr(observer_bridge.os, "scandir", Listed)
    scope = InboxScope(tmp_path, tmp_path / "quarantine", tmp_path / "ledger.sqlite", False)
    assert len(scope.list_files(lambda: answers.append(1))) == 4
    assert answered_before_each_entry == [0, 1, 2, 3]
