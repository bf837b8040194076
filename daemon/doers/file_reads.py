"""Calls on storage that may stop answering, each in a worker thread, timed:
the inbox watcher's reads of a tracked file (below), and every other call
that must not wait for ever on a silent mount (the watcher's ledger, the
planner's ledger and snapshot, the dead-letter ledger and the noted places,
the product store's records, the start's making of its directories). Here,
not in ``doers/inbox/``, since session 45: each user finds it in one place,
and each names what it reads (``of``) in its threads' names and its
ReadHung lines. On a network filesystem a stat can block for seconds, and
the watcher may share its event loop with the rest of the daemon.

A file's opening reads (layout, header, ledger, digest) are made during its
``turn``: a few files at a time, the file seen first served first. A burst
of files is then checked file by file, and the first is announced once its
own reads are done. Without turns (a limiter at each read alone) every
file's layout was read before any file's header, and a 96-file burst waited
250 ms for its first announcement and so for its first calibration
(issue 15).

Each read has a time: a file on a network mount that stopped answering (an
NFS server gone, a hard mount) blocks its read in the kernel for ever, and
four such files held every turn, so nothing else in the inbox was ever
read. A read past its time raises ``ReadHung``: the storage's fault, not the
file's (tracked_file.py parks it, never quarantines it). Its thread cannot
be stopped and is left to return when the mount does; until it has, no
second read of that file starts, and at most ``MOST_HUNG`` are left at
once: past that every read waits its turn as a hung one, so a dead mount
costs a few threads, not one per retry."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.deciders.inbox_file import Sig
from calstream.daemon.doers.digest_memo import digest_of, exposure_of, stat_sig
from calstream.daemon.doers.priority_slots import PrioritySlots
from calstream.daemon.doers.read_threads import ReadJob, ReadThreads
from calstream.steps.exposure import ExposureInfo
from calstream.steps.failures import MOUNT_GONE, infrastructure_cause
from calstream.steps.fitsfile import FitsLayout, fits_layout
from calstream.steps.mount_health import sick_mount

# A stat or a header read answers in milliseconds, and in seconds on a busy
# network mount; a minute is beyond any working storage.
READ_SECONDS = 60.0
# A whole-file digest is also given the time to read it at this rate: the
# slowest storage that still works (a 64 GiB file: about 70 minutes).
SLOWEST_BYTES_PER_SECOND = 16 << 20
MOST_HUNG = 8  # reads left running past their time, at most
INBOX_HUNG = "inbox_hung"  # the parking's cause (status: what to do about it)
# The product store's look-up, made for a file found at a start, unanswered.
STORE_HUNG = "store_hung"
# The watcher's ledger (sqlite, in the work directory) unanswered.
WORK_DIR_HUNG = "work_dir_hung"


class ReadHung(Exception):
    """A call (a read of an inbox file, a write of a ledger) that has not
    returned within its time, or that was not started because an earlier one
    still has not (the storage under it is at fault, not the file). Not an
    OSError: it must never count towards calling the file unreadable.
    ``what`` hung (its log line), ``of``: whose calls they are (FileReads'
    ``of``: "the inbox", "the planner's snapshot"), ``cause``: the
    parking's; ``job``: the call left running, if it began."""

    def __init__(self, path: Path, seconds: float, *, earlier: bool = False,
                 what: str = "read", cause: str = INBOX_HUNG,
                 of: str = "the work directory") -> None:
        self.path, self.seconds, self.cause = path, seconds, cause
        self.job: ReadJob | None = None
        why = (f"an earlier {what} of it, or too many calls on {of}, still not returned"
               if earlier else f"no answer from its storage within {seconds:g} s")
        super().__init__(f"{path.name}: {what} hung: {why}")


class FileReads:
    """``of``: whose calls these are ("the inbox", "the planner's ledger"),
    for the names of its threads and its ReadHung lines: one thread or line
    in a dump or a log says which storage did not answer, and for whom."""

    def __init__(self, concurrency: int, read_seconds: float = READ_SECONDS, *,
                 of: str = "the work directory") -> None:
        self.of = of
        # Files being read at once; every opening read below is made during a
        # file's turn, so this also bounds the reads.
        self._turns = PrioritySlots(concurrency)
        self.read_seconds = read_seconds
        # Reads past their time whose thread has not returned yet, by path;
        # their threads remove them (under the lock) when they do.
        self._hung: dict[Path, int] = {}
        self._running = 0  # reads in a thread, within their time
        self._lock = threading.Lock()
        # Their own threads: reads waiting on a dead mount never hold the
        # tokens of anyio's default limiter, which the rest of the daemon
        # (the product store, the stage consumers) shares, nor keep its
        # process from exiting (read_threads.py). A read's time starts once
        # it has one of them (``timed``).
        self._threads = anyio.CapacityLimiter(MOST_HUNG)
        self._pool = ReadThreads(f"calls on {of}")

    def hung(self) -> int:
        """Reads left running past their time now (for a test, or a status)."""
        with self._lock:
            return sum(self._hung.values())

    @asynccontextmanager
    async def turn(self, first_seen: int) -> AsyncIterator[None]:
        """A file's turn at being read; the lowest ``first_seen`` waiting goes next."""
        await self._turns.acquire(first_seen)  # no hand_over here: the slot is ours
        try:
            yield
        finally:
            self._turns.release()

    async def sig(self, path: Path) -> Sig | None:
        """Size, mtime, inode and ctime (size NOT_A_FILE if it is not a regular
        file); None if it is gone."""
        try:
            st = await self.timed(os.stat, path, self.read_seconds)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return stat_sig(st)

    async def look(self, path: Path, roots: Sequence[Path]) -> tuple[Sig | None, str | None]:
        """``sig``, and where the file leads when it is a symbolic link out of
        ``roots`` (None otherwise): such a link is never read (an lstat more
        a look, and a resolve only for a link)."""
        return await self.timed(lambda p: _look(p, roots), path, self.read_seconds)

    async def layout(self, path: Path) -> FitsLayout:
        return await self.timed(fits_layout, path, self.read_seconds)

    async def identity(self, path: Path) -> ExposureInfo:
        """Exposure id and header, checked against the name (BadExposure)."""
        return await self.timed(exposure_of, path, self.read_seconds)

    async def digest(self, path: Path, size: int) -> str:
        # Remembered by signature: the admission of the announcement, in this
        # same daemon, then does not read the whole file again.
        return await self.timed(digest_of, path, self.given(size))

    def given(self, size: int) -> float:
        """The time a call that reads (or copies) ``size`` bytes is given:
        a hash, a move into quarantine on another file system."""
        return self.read_seconds + max(0, size) / SLOWEST_BYTES_PER_SECOND

    async def digest_or_none(self, path: Path, size: int) -> str | None:
        """For the quarantine record, so an operator can tell redeliveries apart."""
        try:
            return await self.digest(path, size)
        except (OSError, ReadHung):
            return None

    async def mount_fault(self, path: Path, error: OSError) -> str | None:
        """The second look after a read of ``path`` failed with ``error``
        (EIO): a soft network mount whose server is gone fails every read
        so, as a damaged file fails its own. Made as a run's is
        (steps/mount_health.py: the directory listed, a probe written there
        and removed), timed; after a permission error a few neighbours of
        the file are opened too (every one refusing: the mount's, mount_gone).
        The mount's fault (mount_gone, a full or read-only disk; inbox_hung
        when the look does not answer), or None: the file's own."""
        refused = path if isinstance(error, PermissionError) else None
        try:
            found = await self.timed(lambda d: sick_mount([d], [d], refused), path.parent,
                                     self.read_seconds, what="second look")
        except ReadHung:
            return INBOX_HUNG
        return None if found is None else infrastructure_cause(found[1]) or MOUNT_GONE

    async def listing(self, list_files: Callable[[Callable[[], None]], Any], path: Path, *,
                      what: str = "read", cause: str = INBOX_HUNG) -> Any:
        """``list_files(answered)`` of the inbox at ``path``, hung once no entry
        has answered (it calls ``answered()`` at each) for ``read_seconds``:
        a stat per file of a large inbox on a network mount takes longer than
        that as a whole, each answering, and every listing was abandoned as
        hung and made again, for ever (a start never ended). ``what`` and
        ``cause``: the ReadHung's."""
        answers = _Answers()
        return await self.timed(lambda _: list_files(answers.answered), path,
                                self.read_seconds, answers=answers, what=what, cause=cause)

    async def timed(self, fn: Callable[[Path], Any], path: Path, seconds: float, *,
                    answers: _Answers | None = None, what: str = "read",
                    cause: str = INBOX_HUNG) -> Any:
        """``fn(path)`` in a worker thread, given ``seconds`` (ReadHung after;
        with ``answers``, after its last answer) from when it has a thread:
        a wait for one, behind reads that answer (a burst of arrivals, each
        file's stat; slow storage that works), is no silence of its storage,
        and was called hung, its file (or the inbox) parked as inbox_hung,
        unread. Threads come back within the
        time of the reads holding them: a hung one is left running without
        its token, and counted: the threads reading and those left hung are
        MOST_HUNG at most. ``what`` and ``cause``: the ReadHung's."""
        hung = {"what": what, "cause": cause, "of": self.of}
        self._unless_too_many_hung(path, seconds, hung)
        async with self._threads:
            # Those it waited behind may have been left hung meanwhile.
            self._unless_too_many_hung(path, seconds, hung, besides=True)
            return await self._timed_in_thread(fn, path, seconds, answers or _Answers(), hung)

    async def waited(self, fn: Callable[[Path], Any], path: Path, seconds: float, *,
                     late: Callable[[ReadHung], Any], what: str) -> Any:
        """``fn(path)``, a change (the quarantine's move), timed as a read but
        never abandoned once begun: abandoned, it finished unseen once the
        mount answered (a file in quarantine that no report names, or half
        moved). Past its time ``late(ReadHung)`` is told (it parks), and the
        call awaited until it returns; a cancel (a stop) abandons it. Raises
        ReadHung when it could not begin (too many reads left hung)."""
        try:
            return await self.timed(fn, path, seconds, what=what)
        except ReadHung as exc:
            if exc.job is None:
                raise
            late(exc)
            await exc.job.done.wait()
            return exc.job.outcome()

    def _unless_too_many_hung(self, path: Path, seconds: float, hung: dict[str, str], *,
                              besides: bool = False) -> None:
        with self._lock:
            busy = sum(self._hung.values()) + (self._running if besides else 0)
            if path in self._hung or busy >= MOST_HUNG:
                raise ReadHung(path, seconds, earlier=True, **hung)

    async def _timed_in_thread(self, fn: Callable[[Path], Any], path: Path,
                               seconds: float, answers: _Answers, hung: dict[str, str]) -> Any:
        call = {"started": False, "returned": False, "hung": False}

        def read() -> Any:
            with self._lock:
                if call["hung"]:  # its time ran out before the thread began it: not read
                    call["returned"] = True
                    raise ReadHung(path, seconds, earlier=True, **hung)
                call["started"] = True
                self._running += 1
            answers.answered()  # its time starts now
            try:
                return fn(path)
            finally:
                with self._lock:
                    call["returned"] = True
                    if call["hung"] and call["started"]:  # the mount answered at last
                        left = self._hung.pop(path) - 1
                        if left:
                            self._hung[path] = left
                    elif call["started"]:
                        self._running -= 1

        # Abandoned on cancel (the time, or the daemon's shutdown): hashing a
        # large file must not delay a stop, and a hung read cannot be stopped.
        job = self._pool.start(read)
        while (left := answers.at + seconds - time.monotonic()) > 0 and not job.done.is_set():
            with anyio.move_on_after(left):
                await job.done.wait()
        if job.done.is_set():
            return job.outcome()
        with self._lock:
            returned = call["returned"] and call["started"]
            started = call["started"] and not call["returned"]
            call["hung"] = True
            if started:  # no longer running: left hung
                self._hung[path] = self._hung.get(path, 0) + 1
                self._running -= 1
        if returned:  # just as its time ran out: its outcome is on its way (a move done)
            await job.done.wait()
            return job.outcome()
        # Not started (a thread not begun in all its time): not left running,
        # so not counted.
        exc = ReadHung(path, seconds, earlier=not started, **hung)
        if started:
            exc.job = job  # for a change, which is awaited (``waited``)
        raise exc


class _Answers:
    """When a read last answered (it started, or a listing's entry did)."""

    def __init__(self) -> None:
        self.at = time.monotonic()

    def answered(self) -> None:  # from the reading thread: one float, written whole
        self.at = time.monotonic()


def _look(path: Path, roots: Sequence[Path]) -> tuple[Sig | None, str | None]:
    try:
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode):
            return stat_sig(st), None
        st = os.stat(path)  # what the link leads to: judged as any file
    except (FileNotFoundError, NotADirectoryError):  # gone, or a link leading nowhere
        return None, None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        # A loop of links leads nowhere too (it was an unexpected error,
        # eight tracebacks before the file was given up).
        return None, None
    target = path.resolve()
    if any(target.is_relative_to(root.resolve()) for root in roots):
        return stat_sig(st), None
    return stat_sig(st), str(target)
