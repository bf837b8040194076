"""One daemon per work directory: a lock held for the daemon's life.

A work directory holds one daemon's state: its planner's ledger and
snapshot (with the offsets of its broker's topics), its dead-letter
ledger, the embedded broker's directory, the deployment record the
operators' commands follow. Two daemons started on one directory (a second
``calstream run`` by mistake, a unit started twice) would write each
other's snapshot and ledgers: a planner restored from a snapshot of
another broker's offsets is wrong state, silently. So the daemon takes an
exclusive ``flock`` on ``<work_dir>/daemon.lock`` before anything else (or,
where the directory cannot be made yet, before its first write there, by
the start's wait for it: WorkDirLock) and holds it until it exits; a
second daemon refuses to start (a configuration error, exit status 2) and
says which one holds it. The kernel drops the
lock with the process, kill -9 included, so a crash never leaves it held;
the descriptor is close-on-exec, so no worker or broker process keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import anyio

from calstream.daemon.doers.file_reads import READ_SECONDS, WORK_DIR_HUNG, FileReads, ReadHung
from calstream.daemon.operations.config import ConfigError

log = logging.getLogger("calstream.daemon")

LOCK = "daemon.lock"
HOLDER_BYTES = 4096  # what is read of a holder's note: a line, however the file grew


class WorkDirInUse(ConfigError):
    """Another daemon holds the work directory."""


def _open(work_dir: Path) -> int:
    work_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(work_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                 | os.O_NONBLOCK, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{work_dir / LOCK} is not a regular file: remove it")
    return fd


def _holder(fd: int) -> str:
    try:
        note = json.loads(os.pread(fd, HOLDER_BYTES, 0) or b"{}")
        return (f"pid {int(note['pid'])} on {str(note['host'])[:64]} "
                f"since {str(note['since'])[:32]}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a daemon that left no note"


class WorkDirLock:
    """The lock of one work directory, for this process: taken at start, or,
    where the directory cannot be made or written yet (a disk not mounted,
    full, read-only), by the start's wait for its work directory
    (start_waits.StartWaits.roots_made) before anything is written there."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        self._fd: int | None = None
        # One take at a time: a take left hung on a silent mount (holding)
        # and the start's own take, both answered at once, flocked two
        # descriptors of this process, the second refused as "another daemon".
        self._taking = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> None:
        """Held from now on (nothing to do if it is). Raises WorkDirInUse
        when another process holds it, OSError while the directory or its
        lock file cannot be made."""
        with self._taking:
            if self._fd is None:
                self._take()

    def _take(self) -> None:
        fd = _open(self.work_dir)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise WorkDirInUse(
                f"the work directory {self.work_dir} is in use by another calstream daemon "
                f"({holder}): give each daemon its own --work-dir") from None
        except BaseException:
            os.close(fd)
            raise
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        with contextlib.suppress(OSError):  # the note is for the message only
            os.ftruncate(fd, 0)
            os.pwrite(fd, (note + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # and with it the lock


@contextlib.contextmanager
def holding(work_dir: Path, *, seconds: float = READ_SECONDS) -> Iterator[WorkDirLock]:
    """The work directory locked for this process while inside.

    Raises WorkDirInUse when another process holds it. A directory the lock
    cannot be made in yet is left to the start's own wait for its work
    directory, which takes the lock (give the yielded lock to the Daemon)
    before writing there, and stops as here if another daemon took it.
    A directory that does not answer within ``seconds`` (a silent network
    mount: the take blocked there for ever, before the operations endpoint
    was up, unseen) is left so too; its take goes on in its thread."""
    lock = WorkDirLock(work_dir)
    try:
        anyio.run(partial(FileReads(1, seconds, of="the work directory's lock").timed, lambda _: lock.take(), Path(work_dir),
                          seconds, what="lock", cause=WORK_DIR_HUNG))
    except (OSError, ReadHung) as exc:
        log.warning("could not lock the work directory %s yet (%s): the start takes the lock "
                    "once it can write there", work_dir, getattr(exc, "strerror", None) or exc)
    try:
        yield lock
    finally:
        lock.release()


def in_use(work_dir: Path) -> str | None:
    """Who holds ``work_dir`` now (None: nobody, or no lock file), without
    taking it: for a command about to clear the directory."""
    try:
        fd = os.open(work_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        return None
    finally:
        os.close(fd)
