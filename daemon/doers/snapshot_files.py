"""The planner's snapshot file read and written in threads of their own,
timed as the planner's ledger is (PlannerLedger.timed, FileReads).

On a work directory gone silent (a hard NFS mount whose server is away) the
write, in anyio's threads, held the planner at its next snapshot for ever,
unseen, and a stop of the daemon waited for that thread; the read at start
froze the start the same way. A call past its time raises ReadHung (cause
work_dir_hung): a snapshot is an optimisation, so the write is skipped and
parked (planner_restore.take_snapshot) and the read falls back to the full
rebuild. Its thread is left to return when the mount does; until then every
other call of the snapshot raises ReadHung at once, no second thread. Only
the I/O is timed: encoding and parsing are CPU (planner_snapshots.pack, parse).
"""

from __future__ import annotations

import os
from pathlib import Path

from calstream.daemon.doers.file_reads import (
    READ_SECONDS,
    WORK_DIR_HUNG,
    FileReads,
    ReadHung,
)
from calstream.daemon.doers.planner_snapshots import Found, Packed, put, read_file, snapshot_path

OF = "the planner's snapshot"  # its threads' name and its ReadHung lines say whose


class SnapshotFiles:
    def __init__(self, work_dir: str | Path, *, seconds: float = READ_SECONDS) -> None:
        self.work_dir, self.path, self.seconds = work_dir, snapshot_path(work_dir), seconds
        self._reads: FileReads | None = None  # made on the planner's own loop, at first use

    def _timed(self) -> FileReads:
        if self._reads is None:
            self._reads = FileReads(1, self.seconds, of=OF)
        return self._reads

    def still_hung(self) -> ReadHung | None:
        """Why no snapshot can be written now: an earlier call still has not
        returned (then the state is not even encoded for it), or None."""
        if self._reads is None or not self._reads.hung():
            return None
        return ReadHung(self.path, self.seconds, earlier=True, what="snapshot's write",
                        cause=WORK_DIR_HUNG, of=OF)

    async def read(self) -> Found | None:
        """``read_file``, given the time to read the file at the slowest
        working rate (its size first, timed too)."""
        reads = self._timed()
        size = await reads.timed(_size, self.path, self.seconds, what="snapshot's look",
                                 cause=WORK_DIR_HUNG)
        return await reads.timed(lambda _: read_file(self.work_dir), self.path,
                                 reads.given(size), what="snapshot's read", cause=WORK_DIR_HUNG)

    async def delete(self) -> None:
        """The snapshot file removed (found unreadable late: the planner
        rebuilds), timed as its read and write are."""
        await self._timed().timed(lambda p: p.unlink(missing_ok=True), self.path, self.seconds,
                                  what="snapshot's deletion", cause=WORK_DIR_HUNG)

    async def put(self, packed: Packed) -> int:
        """``put``: the snapshot written (atomically), its size."""
        reads = self._timed()
        return await reads.timed(lambda _: put(self.work_dir, packed), self.path,
                                 reads.given(len(packed.data)), what="snapshot's write",
                                 cause=WORK_DIR_HUNG)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # none there, or unreadable: read_file says which
        return 0
