"""The planner's own copy of what it keeps on compacted topics: plans and holds.

The broker is the transport; with the embedded default it keeps everything in
memory, so a restart loses the ``plans`` and ``holds`` topics. Product events
come back from the product store (runtime.py) and stage-3 versions with them
(``PlannerState.restore_product``); plans and holds have no product behind
them, so the planner writes each one here, atomically, when it first sees or
sends it, and at start re-publishes what the broker no longer has.

Layout: ``<work_dir>/planner/plans/<plan_id>.json`` (the plan message's body)
and ``<work_dir>/planner/holds/<exposure_id>.json`` (the last hold record of
the exposure, as compaction keeps it).

Every name there is untrusted: only ``<key>.json`` with a key the ledger
writes (deciders/ledger_names.py) is read, and a record whose key is not
its file's is refused; the temporary of a write whose writer was killed
(``.<key>.json.<pid>.tmp``, its pid running no more) is removed; anything
else is skipped, with one warning per directory read (how many, a few
names: thousands of them would flood the log at every start). A directory, FIFO or
link at a record's name, or a file where ``planner`` or its topic's
directory goes, is moved aside (steps/regular_files.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from calstream.daemon.deciders.ledger_names import file_name, key_of, key_problem, strays_summary
from calstream.daemon.doers.child_processes import pid_alive
from calstream.daemon.doers.durable_files import temporary_of, write_json_atomically
from calstream.daemon.doers.file_reads import (
    READ_SECONDS,
    WORK_DIR_HUNG,
    FileReads,
)
from calstream.steps.regular_files import (
    directory_in_place,
    read_regular_file,
    set_aside_unless_regular,
)
from calstream.topics import contract

log = logging.getLogger("calstream.planner")
T = TypeVar("T")


class KeyedLedger:
    """Records kept as ``<root>/<topic>/<key>.json``, one a key, each
    written atomically; the planner's and the dead letters' ledgers are this
    one mechanism with their own directory and keys."""

    DIRECTORY = "planner"  # under the work directory
    KINDS = {"plans": "plan_id", "holds": "exposure_id"}  # topic -> the key of its records
    WHAT = "planner ledger"  # how warnings name it
    LOG = log  # the logger they go to

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.root = self.work_dir / self.DIRECTORY

    def _path(self, topic: str, body: dict[str, Any]) -> Path:
        key = body[self.KINDS[topic]]
        problem = key_problem(key)
        if problem:
            raise ValueError(f"cannot keep a {topic} record: {problem}")
        return self.root / topic / file_name(key)

    def keep(self, topic: str, body: dict[str, Any]) -> None:
        """Record ``body`` (a plan: once; a hold: its latest state)."""
        path = self._path(topic, body)
        if topic == "plans" and self._record_at(path, topic) is not None:
            # A plan's content never changes: its id is its digest. One that
            # cannot be read there (torn, garbage) is written again, not kept.
            return
        write_json_atomically(path, body, what=f"{self.WHAT} record", root=self.work_dir)

    def kept(self, topic: str, *, tidy: bool = True,
             answered: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
        """Every record kept for ``topic``, in a stable order. ``tidy``
        False: only read (an operator's command reading a running daemon's
        ledger must not remove or move what the daemon may be writing).
        ``answered()`` is called as the listing and each file answer: a
        caller timing the read (FileReads.listing) calls it hung once
        nothing has answered in its time, not once the whole has taken
        longer (10,000 dead letters on slow storage that works)."""
        directory = self.root / topic
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        except NotADirectoryError:  # ``planner`` or ``planner/<topic>`` is a file
            if not tidy:
                return []
            try:
                directory_in_place(directory, root=self.work_dir,
                                   what=f"the {self.WHAT}'s directory")
            except OSError as exc:
                self.LOG.warning("%s %r unusable (%s): nothing read", self.WHAT, str(directory), exc)
            return []
        out, strays = [], []
        for name in names:
            answered()
            path = directory / name
            if key_of(name) is None:
                if tidy and not _removed_leftover(path, self.WHAT, self.LOG):
                    strays.append(name)
                continue
            body = self._record_at(path, topic, tidy=tidy)
            if body is not None:
                out.append(body)
        if strays:
            self.LOG.warning(strays_summary(str(directory), strays, self.WHAT))
        return out

    def _record_at(self, path: Path, topic: str, *, tidy: bool = True) -> dict[str, Any] | None:
        """The record at ``path`` (named for its key), or None with a warning
        (none for a missing file); what is no regular file is moved aside
        (``tidy``), or only not read."""
        try:
            if not tidy and not path.is_file():
                return None
            if tidy and set_aside_unless_regular(path, what=f"{self.WHAT} record") is not None:
                return None
            # Read as the message it was: no NaN or Infinity (re-published,
            # no reader would take it), no duplicate key, no nesting too deep.
            body = contract.parse_json(read_regular_file(path))
        except FileNotFoundError:
            return None
        except (OSError, contract.InvalidMessage) as exc:
            self.LOG.warning("unreadable %s record %r (%s): ignored", self.WHAT, str(path), exc)
            return None
        # Its key is text (a list raised out of the start: ids are kept in
        # sets), and its file's: a record under another's name is no record.
        key = body.get(self.KINDS[topic]) if isinstance(body, dict) else None
        if key != key_of(path.name):
            self.LOG.warning("%s record %r names %s %r, not its file's: ignored", self.WHAT,
                        str(path), self.KINDS[topic],
                        key if isinstance(key, str) else type(key).__name__)
            return None
        return body


class PlannerLedger(KeyedLedger):
    """The planner's plans and holds (the layout above).

    The planner reads and writes it through ``timed``: in anyio's threads,
    on a work directory gone silent (a hard NFS mount whose server is away),
    a write held the planner's task for ever, unseen (its loop still beat:
    /healthz stayed alive, /readyz ready, no metric), and a stop of the
    daemon waited for the thread for ever."""

    def __init__(self, work_dir: Path, *, seconds: float = READ_SECONDS):
        super().__init__(work_dir)
        self.seconds = seconds
        self._reads: FileReads | None = None  # made on the planner's own loop, at first use

    async def timed(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a read or write of the ledger, in a thread left
        behind past ``seconds`` (ReadHung, cause work_dir_hung: its caller
        parks); until it returns, every other call raises ReadHung at once,
        so writes stay in their order."""
        return await self._timer().timed(lambda _: fn(*args), self.root, self.seconds,
                                         what=f"{self.WHAT}'s call", cause=WORK_DIR_HUNG)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args, answered=...)``, a read of the ledger that calls
        ``answered`` at each file (``kept``), timed as ``timed`` is but from
        its last answer: timed as a whole, a large ledger on slow storage
        that works was called hung, and read again from its start, for
        ever; one that does not answer is still hung in ``seconds``."""
        return await self._timer().listing(lambda answered: fn(*args, answered=answered),
                                           self.root, what=f"{self.WHAT}'s read",
                                           cause=WORK_DIR_HUNG)

    def _timer(self) -> FileReads:
        if self._reads is None:  # one for reads and writes: a call left hung blocks the next
            self._reads = FileReads(1, self.seconds, of=f"the {self.WHAT}")
        return self._reads


def _removed_leftover(path: Path, what: str, log: logging.Logger) -> bool:
    """Whether ``path`` was the temporary of a ledger write whose writer is
    gone (write_json_atomically, killed between writing and renaming): then
    it is removed, with one line. Its record is the file it was to replace,
    or was never kept (its plan or hold is kept again when it comes again).
    A live writer's temporary (a write in flight, or a pid reused since) is
    left, and warned about as any other name."""
    leftover = temporary_of(path.name)
    if leftover is None or key_of(leftover[0]) is None or pid_alive(leftover[1]):
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return True  # another reader of the ledger removed it first
    except OSError as exc:  # a directory of that name, a read-only disk: warned below
        log.warning("%s: %r, left by a writer that is gone (pid %d), cannot be "
                    "removed: %s", what, str(path), leftover[1], exc)
        return True
    log.info("%s: removed %r, the temporary of a write interrupted in process %d "
             "(no longer running)", what, str(path), leftover[1])
    return True
