"""What the inbox watcher has announced, keyed by (exposure id, digest).

Also a digest cache: a start-up scan of a large inbox would otherwise re-hash
every file. A row is reused only when path, size, mtime, inode and ctime all
match; a replaced or rewritten file changes at least the inode or the ctime,
which no writer can set.

Every call runs in a worker thread, one at a time: sqlite on a network
filesystem can block, and the watcher shares its event loop with the daemon.
The threads are the door's (file_reads.py), and each call is timed as the
inbox's reads are: in anyio's threads a work directory gone silent (a hard
NFS mount) held the watcher's start (and with it the rest of the daemon's),
the file under way and any stop for ever, unseen: such a thread cannot be
abandoned, and the process waited for it at exit. A call past its time
raises ReadHung (cause ``work_dir_hung``), its file is parked as a hung
read's is, and until the call left hung returns every other call raises at
once (the connection is still in its hands), so a silent work directory
costs one thread.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.deciders.inbox_file import Sig
from calstream.daemon.doers.file_reads import WORK_DIR_HUNG, FileReads, ReadHung
from calstream.daemon.doers.inbox.reports import Arrival
from calstream.steps.regular_files import move_aside, set_aside_unless_regular

log = logging.getLogger("calstream.watcher")

_SCHEMA = """CREATE TABLE IF NOT EXISTS announced (
    exposure_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER, mtime_ns INTEGER, inode INTEGER, ctime_ns INTEGER,
    announced_at REAL,  -- NULL: products existed at start-up, not announced
    recorded_at REAL NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (exposure_id, digest))"""

_COMPANIONS = ("-wal", "-shm", "-journal")  # sqlite's files beside the database

_UPSERT = """INSERT INTO announced VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (exposure_id, digest) DO UPDATE SET
      path = excluded.path, size = excluded.size, mtime_ns = excluded.mtime_ns,
      inode = excluded.inode, ctime_ns = excluded.ctime_ns,
      announced_at = COALESCE(excluded.announced_at, announced.announced_at),
      recorded_at = excluded.recorded_at, source = excluded.source"""


def _connected(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute(_SCHEMA)
        db.execute("CREATE INDEX IF NOT EXISTS announced_path ON announced(path)")
        # A damaged file may still open: quick_check reads every page once
        # (about a second for 100 MB) rather than failing a query later.
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {str(verdict)[:200]}")
    except BaseException:
        db.close()
        raise
    return db


def _text(path: Path) -> str:
    """A path as sqlite can store it: a name that is not UTF-8 (surrogates in
    Python) made every query raise; its bytes are written as \\xNN instead
    (a UTF-8 name is unchanged, so are the rows of an existing ledger)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class Ledger:
    def __init__(self, db: sqlite3.Connection, path: Path, reads: FileReads) -> None:
        self._db, self.path, self.reads = db, path, reads
        self._lock = anyio.Lock()  # the connection is used by one thread at a time

    @classmethod
    async def open(cls, path: Path, reads: FileReads | None = None) -> Ledger:
        """The ledger at ``path``; a file there that is no database, or a
        damaged one, is moved aside and a new ledger started, so that no
        one has to delete it before the watcher can start. What is lost is
        a cache: the start-up scan hashes the inbox again, and a file whose
        products exist is recorded, not announced (Announcer), as on a
        first start. Errors of the disk or of locking are raised as they are."""
        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A directory (a FIFO, a link) at its name or its journal's: sqlite
            # cannot open it, an OperationalError taken for the disk's, and the
            # start waited for ever.
            for suffix in ("", *_COMPANIONS):
                set_aside_unless_regular(Path(f"{path}{suffix}"), what="inbox ledger")
            try:
                return _connected(path)
            except sqlite3.OperationalError:
                raise  # the disk, a lock, permissions: not the file's content
            except sqlite3.DatabaseError as exc:
                move_aside(path, what="inbox ledger", companions=_COMPANIONS,
                           why=f"cannot be read ({exc}); a new one started, the start-up scan "
                               "hashes the inbox again")
                return _connected(path)

        reads = reads or FileReads(1, of="the watcher's ledger")
        return cls(await reads.timed(lambda _: connect(), path, reads.read_seconds,
                                     what="ledger's opening", cause=WORK_DIR_HUNG), path, reads)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._lock:
            return await self.reads.timed(lambda _: fn(*args), self.path, self.reads.read_seconds,
                                          what="ledger's read", cause=WORK_DIR_HUNG)

    async def has(self, exposure_id: str, digest: str) -> bool:
        query = "SELECT 1 FROM announced WHERE exposure_id = ? AND digest = ?"
        row = await self._call(lambda: self._db.execute(query, (exposure_id, digest)).fetchone())
        return row is not None

    async def cached_digest(self, path: Path, exposure_id: str, sig: Sig) -> str | None:
        query = (
            "SELECT digest FROM announced WHERE path = ? AND exposure_id = ? AND size = ? "
            "AND mtime_ns = ? AND inode = ? AND ctime_ns = ? ORDER BY recorded_at DESC LIMIT 1"
        )
        row = await self._call(
            lambda: self._db.execute(query, (_text(path), exposure_id, *sig)).fetchone()
        )
        return row[0] if row else None

    async def known(self, path: Path, sig: Sig) -> tuple[str, str] | None:
        """The (exposure id, digest) ``path`` was recorded with under exactly
        this stat, or None: if known, it was whole then, had that content,
        and has not been written since."""
        query = (
            "SELECT exposure_id, digest FROM announced WHERE path = ? AND size = ? "
            "AND mtime_ns = ? AND inode = ? AND ctime_ns = ? ORDER BY recorded_at DESC LIMIT 1"
        )
        row = await self._call(lambda: self._db.execute(query, (_text(path), *sig)).fetchone())
        return (row[0], row[1]) if row else None

    async def record(self, a: Arrival, sig: Sig, *, announced: bool) -> None:
        """``announced=False``: its products existed at start-up; remembered
        so that it is not announced again, with no announcement time."""
        now = time.time()
        row = (
            a.exposure_id,
            a.digest,
            _text(a.path),
            *sig,
            now if announced else None,
            now,
            a.source if announced else "products-exist",
        )
        await self._call(self._db.execute, _UPSERT, row)

    async def close(self) -> None:
        try:
            await self._call(self._db.close)
        except ReadHung as exc:  # left to the process's end
            log.warning("the watcher's ledger left open: %s", exc,
                        extra={"stage": "watcher", "path": str(self.path)})
