"""The planner run again in the same process: rebuilt when its restored
state turns out unreadable, restarted from its own snapshot after a
compaction. No operator restarts anything, and the watcher and stage
consumers of the process never stop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from calstream.daemon.deciders import planner_snapshot
from calstream.daemon.doers.file_reads import ReadHung
from calstream.daemon.doers.planner_compaction import Compaction
from calstream.daemon.doers.snapshot_files import SnapshotFiles

log = logging.getLogger("calstream.planner")


class _StartedOnce:
    """A task status that a planner started again may report to again: only
    the first report reaches the waiting caller (anyio allows one)."""

    def __init__(self, status: Any) -> None:
        self._status, self._done = status, False

    def started(self, value: Any = None) -> None:
        if not self._done:
            self._done = True
            self._status.started(value)


async def rebuilding_when_unreadable(run_once: Callable[[Any], Awaitable[None]],
                                     work_dir: str, unreadable: Callable[[], None],
                                     compacted: Callable[[Compaction], None], *,
                                     task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the planner (``run_once(task_status)``); when its restored state
    turns out unreadable (a snapshot block read late), delete that snapshot and
    run a new planner, which rebuilds from the topics. A planner over its
    memory budget (Compaction) is run again the same way, from the snapshot
    it has just written.

    The deletion is timed (SnapshotFiles.delete): on the planner's loop, on
    a silent work directory, it held that loop for ever (its beat stopped,
    nothing decided). Left hung, the new planner is run all the same: its
    own read of the snapshot is timed too, and the rebuild's first snapshot
    replaces the file. The deletion left behind lands when the mount
    answers, and removes only the snapshot that failed (SnapshotFiles
    .delete: that file, by its envelope), never the rebuild's: until
    session 46 it removed whatever was there then, and the next start
    rebuilt once more."""
    status = _StartedOnce(task_status)
    snapshot = SnapshotFiles(work_dir)
    while True:
        try:
            return await run_once(status)
        except planner_snapshot.SnapshotInvalid as exc:
            log.error("planner: restored state unreadable (%s); rebuilding from the topics", exc)
            try:
                await snapshot.delete()
            except (OSError, ReadHung) as gone:
                log.error("planner: the unreadable snapshot %s not deleted (%s): rebuilding all "
                          "the same; the rebuild's first snapshot replaces it", snapshot.path,
                          gone, extra={"fault": "infrastructure"})
            unreadable()
        except Compaction as exc:
            log.warning("planner: %s after its snapshot: starting again from that snapshot, "
                        "which keeps the records it decided compactly (docs/operations.md, "
                        "\"Planner memory\")", exc)
            compacted(exc)
