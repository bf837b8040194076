"""The reads the inbox watcher makes of a tracked file, each in a worker
thread: on a network filesystem a stat can block for seconds, and the watcher
may share its event loop with the rest of the daemon.

A file's opening reads (layout, header, ledger, digest) are made during its
``turn``: a few files at a time, the file seen first served first. A burst
of files is then checked file by file, and the first is announced once its
own reads are done. Without turns (a limiter at each read alone) every
file's layout was read before any file's header, and a 96-file burst waited
250 ms for its first announcement and so for its first calibration
(issue 15)."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from calstream.daemon.deciders.inbox_file import Sig
from calstream.daemon.doers.digest_memo import digest_of, exposure_of
from calstream.daemon.doers.inbox.observer_bridge import stat_sig
from calstream.daemon.doers.priority_slots import PrioritySlots
from calstream.steps.exposure import ExposureInfo
from calstream.steps.fitsfile import FitsLayout, fits_layout


class FileReads:
    def __init__(self, concurrency: int) -> None:
        # Files being read at once; every opening read below is made during a
        # file's turn, so this also bounds the reads.
        self._turns = PrioritySlots(concurrency)

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
            st = await anyio.to_thread.run_sync(os.stat, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return stat_sig(st)

    async def look(self, path: Path, roots: Sequence[Path]) -> tuple[Sig | None, str | None]:
        """``sig``, and where the file leads when it is a symbolic link out of
        ``roots`` (None otherwise): such a link is never read (an lstat more
        a look, and a resolve only for a link)."""
        return await anyio.to_thread.run_sync(_look, path, roots)

    async def layout(self, path: Path) -> FitsLayout:
        return await self._read(fits_layout, path)

    async def identity(self, path: Path) -> ExposureInfo:
        """Exposure id and header, checked against the name (BadExposure)."""
        return await self._read(exposure_of, path)

    async def digest(self, path: Path) -> str:
        # Remembered by signature: the admission of the announcement, in this
        # same daemon, then does not read the whole file again.
        return await self._read(digest_of, path)

    async def digest_or_none(self, path: Path) -> str | None:
        """For the quarantine record, so an operator can tell redeliveries apart."""
        try:
            return await self.digest(path)
        except OSError:
            return None

    async def _read(self, fn: Callable[[Path], Any], path: Path) -> Any:
        # Abandoned on cancel: hashing a large file must not delay shutdown.
        return await anyio.to_thread.run_sync(fn, path, abandon_on_cancel=True)


def _look(path: Path, roots: Sequence[Path]) -> tuple[Sig | None, str | None]:
    try:
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode):
            return stat_sig(st), None
        st = os.stat(path)  # what the link leads to: judged as any file
    except (FileNotFoundError, NotADirectoryError):  # gone, or a link leading nowhere
        return None, None
    target = path.resolve()
    if any(target.is_relative_to(root.resolve()) for root in roots):
        return stat_sig(st), None
    return stat_sig(st), str(target)
