"""Sealing a task's outputs in the worker that wrote them: each output (a
regular file of its ``output_dir``) made durable (fsync), and its digest
and size sent back with the task's value (``sealed``). The daemon's main process then
only renames them into place (product_store.publish).

Sealing a file starts the moment the task's writer closes it, not when the
task returns: a detector1 run closes its rateints file (96 MB at full frame)
while it still has the rate file to write, so by the end only the rate file
is left to hash and sync (issue 15: the fixed cost per exposure). The early
seal is in threads beside the task; hashlib and the reads release the GIL.

An early seal counts only if nothing changed the file after the close it
followed. inotify reports, in order, every write, truncation, creation,
rename and removal in the directory: any of these after the close voids that
file's early seal (a later close starts another). What inotify cannot see
(writes through a shared mmap) changes the file's mtime or ctime, so the
file's stat must also be the same at the end as when its hashing began.
Everything not sealed early -- no close seen, a voided seal, files in other
directories, no inotify at all (not Linux, the per-user instance limit
reached) -- is sealed at the end, as before: the outcome is the same bytes
described, only sooner.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import select
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from calstream.daemon.doers.durable_files import syncing
from calstream.steps.fitsfile import file_digest

log = logging.getLogger("calstream.worker")

# <sys/inotify.h>
_IN_MODIFY, _IN_CLOSE_WRITE = 0x2, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_Q_OVERFLOW, _IN_IGNORED = 0x4000, 0x8000
# A change to a file's bytes or to which file a name is. (IN_ATTRIB is left
# to the stat check: reading a file may update its atime.)
_VOIDS = _IN_MODIFY | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then the name, NUL-padded


def _regular(path: Path) -> bool:
    """A regular file, not a link to one (lstat)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _stat_signature(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _seal_file(path: Path) -> tuple[str, tuple[int, int, int, int]]:
    """The file's digest, hashed while its fsync runs beside, and its stat
    signature from before the hash."""
    signature = _stat_signature(path)
    with syncing([path]):
        digest = file_digest(path)
    return digest, signature


@functools.cache
def _libc() -> ctypes.CDLL:
    # The C library this process already has loaded: ctypes.util.find_library
    # would run ldconfig, ~40 ms, for every task.
    return ctypes.CDLL(None, use_errno=True)


class _Inotify:
    """The close, write, rename and removal events of one directory."""

    def __init__(self, directory: Path) -> None:
        libc = _libc()
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = _IN_CLOSE_WRITE | _VOIDS
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"inotify_add_watch {directory}")

    def read(self) -> list[tuple[int, str]]:
        """The events queued now, as (mask, name); [] when none (non-blocking)."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        events, at = [], 0
        while at + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, at)
            at += _EVENT.size
            name = data[at:at + length].rstrip(b"\0")
            at += length
            events.append((mask, os.fsdecode(name)))
        return events

    def close(self) -> None:
        # Closing an inotify instance that had a watch waits for the kernel's
        # grace period (synchronize_srcu): ~20 ms the task need not wait for.
        threading.Thread(target=os.close, args=(self.fd,), name="inotify-close",
                         daemon=True).start()


class EarlySeals:
    """Seals the files of ``directory`` as their writers close them, until
    ``seal`` (see the module's docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.events = _Inotify(directory)
        # By file name. Only the watch thread touches it until stop() has
        # joined that thread; then only the caller.
        self.early: dict[str, Future] = {}
        self.threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="early-seal")
        self._wake_r, self._wake_w = os.pipe()
        self._watch = threading.Thread(target=self._watch_loop, name="early-seal-watch",
                                       daemon=True)
        self._watch.start()

    def _watch_loop(self) -> None:
        poller = select.poll()  # not select(): a worker may hold fds past 1024
        poller.register(self.events.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                return  # stop(): the caller takes what is still queued
            self._handle(self.events.read())

    def _handle(self, events: list[tuple[int, str]]) -> None:
        for mask, name in events:
            if mask & (_IN_Q_OVERFLOW | _IN_IGNORED):
                self.early.clear()  # events were lost: no early seal can be vouched for
            elif mask & _VOIDS:
                self.early.pop(name, None)
            elif mask & _IN_CLOSE_WRITE and name and not name.startswith("."):
                self.early[name] = self.threads.submit(_seal_file, self.directory / name)

    def stop(self) -> None:
        """No more watching; every event up to now is handled. The task has
        returned, so nothing writes into the directory any more."""
        if self._watch.is_alive():
            os.write(self._wake_w, b"x")
            self._watch.join()
        while events := self.events.read():
            self._handle(events)

    def close(self) -> None:
        self.stop()
        self.threads.shutdown(wait=True)
        self.events.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def take(self, path: Path) -> Future | None:
        """The early seal of ``path`` (resolved), if one stands; after stop()."""
        if path.parent != self.directory:
            return None
        return self.early.get(path.name)


@contextlib.contextmanager
def sealing(output_dir: str | None) -> Iterator[Callable[[Any], Any]]:
    """Around a task: yields ``seal(value)``, the task's value with ``sealed``
    (see ``seal``), using what was sealed early while the task ran."""
    early = None
    directory = Path(output_dir).resolve() if output_dir else None
    if directory is not None and directory.is_dir():
        try:
            early = EarlySeals(directory)
        except (OSError, AttributeError) as exc:  # AttributeError: a libc without inotify
            log.debug("outputs sealed at the end only (no inotify: %s)", exc)
    try:
        yield lambda value: seal(value, output_dir, early)
    finally:
        if early is not None:
            early.close()


def seal(value, output_dir: str | None, early: EarlySeals | None = None):
    """``value`` with ``sealed``: {path: [digest, size]} of its outputs, each
    synced to disk. Files sealed early whose seal still stands are not read
    again."""
    listed = value.get("outputs") if isinstance(value, dict) else None
    if not output_dir or not isinstance(listed, list) or not all(isinstance(p, str)
                                                                 for p in listed):
        return value  # the daemon refuses it (deciders/run_results.py)
    if early is not None:
        early.stop()
    directory = Path(output_dir).resolve()
    # The store moves in the listed outputs alone, and only regular files of
    # output_dir (product_store.publish): any other is refused by the daemon,
    # so not read here (it may be huge, or anyone's) nor synced.
    outputs = [p for p in map(Path, listed) if p.parent.resolve() == directory and _regular(p)]
    pending = {p: f for p in outputs
               if early is not None and (f := early.take(p.resolve())) is not None}
    late = [p for p in outputs if p not in pending]
    sealed: dict[str, list] = {}
    # The late fsyncs run in threads while this one hashes the late outputs.
    with syncing(late):
        for p in late:
            sealed[str(p)] = [file_digest(p), p.stat().st_size]
    for p, future in pending.items():
        try:
            digest, signature = future.result()
            stands = signature == _stat_signature(p)
        except OSError:
            stands = False
        if not stands:  # changed behind inotify's back (an mmap write): seal it now
            digest, signature = _seal_file(p)
            log.info("%s changed after it was sealed early: sealed again", p.name)
        sealed[str(p)] = [digest, signature[1]]
    return {**value, "sealed": sealed}
