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

A deletion left behind so lands late, after the rebuilt planner may have
written its first snapshot: it removes only the file named by its envelope
(``delete``), never whatever holds the name by then (session 46).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from calstream.daemon.doers.file_reads import (
    READ_SECONDS,
    WORK_DIR_HUNG,
    FileReads,
    ReadHung,
)
from calstream.daemon.doers.planner_snapshots import (
    HEAD_READ,
    Found,
    Packed,
    put,
    read_file,
    snapshot_path,
)
from calstream.steps.regular_files import open_regular_file

OF = "the planner's snapshot"  # its threads' name and its ReadHung lines say whose

# By snapshot path: the snapshots that hold the running planner's state, by
# their envelope's digest -- the one it was restored from and the last it
# wrote (those carry the blocks it left unread, as stored: deciders/
# snapshot_reuse.py; one whose write hung may land late). Here, not on the
# planner: the one whose state fails is gone when its runner deletes the file
# (planner_rebuilds.py), which never sees it (roles.py makes it). One planner
# per work directory in a process.
_STATE_IN: dict[Path, list[bytes]] = {}
STATE_KEPT = 4  # the last snapshots written from one state that may be the file


def _digest(head: bytes) -> bytes:
    return hashlib.sha256(head[:HEAD_READ]).digest()  # as read_file reads it


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

    def restored(self, found: Found) -> None:
        """The planner's state is now the one of ``found`` (``delete``)."""
        _STATE_IN[self.path] = [_digest(found.head)]

    async def delete(self) -> bool:
        """The snapshot that holds the planner's state removed (it was found
        unreadable late: the planner rebuilds), and no other; True if it
        was. Timed as its read and write are; the state's snapshot is taken
        at the call, so a deletion that lands late (a silent mount) leaves
        the rebuilt planner's snapshot where it is."""
        ours = _STATE_IN.pop(self.path, None)
        if ours is None:  # no snapshot holds it (a rebuild's state): nothing to remove
            return False
        return await self._timed().timed(lambda p: _remove_if(p, ours), self.path, self.seconds,
                                         what="snapshot's deletion", cause=WORK_DIR_HUNG)

    async def put(self, packed: Packed) -> int:
        """``put``: the snapshot written (atomically), its size."""
        reads = self._timed()
        written = _STATE_IN.setdefault(self.path, [])  # from the state, even if it hangs
        before = list(written)
        written[:] = [*written[1 - STATE_KEPT:], _digest(packed.head)]
        try:
            return await reads.timed(lambda _: put(self.work_dir, packed), self.path,
                                     reads.given(len(packed.data)), what="snapshot's write",
                                     cause=WORK_DIR_HUNG)
        except OSError:
            # Refused (a full or read-only disk): the file is what it was, so
            # the digests are too; counted, refused writes pushed out the
            # snapshot still at the name (session 46).
            written[:] = before
            raise


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # none there, or unreadable: read_file says which
        return 0


def _remove_if(path: Path, ours: list[bytes]) -> bool:
    """``path`` removed if the digest of its first line is one of ``ours``;
    True if it was.

    Moved aside first: a rename is atomic, so the file judged is the one
    taken from the name, whatever is written there meanwhile (a stat or a
    read, then an unlink, could judge one file and remove the next). Another
    one (the rebuilt planner's) is linked back, unless a newer snapshot took
    the name since: that one stays. Left: a kill between the rename and the
    link leaves that snapshot aside (the next start rebuilds), and the file
    aside is overwritten by the next such deletion."""
    aside = path.with_name(path.name + ".unreadable")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        with open_regular_file(aside) as f:
            taken = _digest(f.readline(HEAD_READ)) in ours
    except OSError:  # not a file, or unread (EIO): kept, linked back -- a start rereads it
        taken = False
    if not taken:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # a snapshot newer than it is there
        except OSError:  # no hard link there: by name (one written this instant is lost)
            os.rename(aside, path)
            return False
    os.unlink(aside)
    return taken
