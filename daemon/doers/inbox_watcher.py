"""The inbox watcher: files landing in a directory become arrivals.

Filesystem events only say *that* something happened to a path, never that
a file is finished (inotify reports the create long before the writer is
done, and network filesystems report nothing at all). So events, a polling
observer and a periodic rescan are all just hints that put a path on the
list of tracked files; each tracked file then goes through the same steps:

1. settle: size, mtime, inode and ctime unchanged for ``settle_seconds``,
   so we do not read a file in the middle of a write;
2. structure: ``fits_layout`` says every HDU the headers declare is present
   and the extensions an uncal file needs are there. This, not the settle
   time, is what keeps a file copied in pieces with long pauses from being
   announced early. A file that stays incomplete and unchanged for
   ``incomplete_timeout`` is truncated and rejected;
3. identity: ``describe_exposure`` (name against header) and a streaming
   sha256 digest;
4. dedupe and announce through ``on_arrival``; only after it returns is the
   (exposure id, digest) written to the ledger, so a failed announcement is
   retried with backoff and never lost.

Bad files are moved to the quarantine directory with a ``.reason.txt`` and
reported through ``on_reject``.

Everything that touches the filesystem, the ledger or a caller's sync
callback runs in a worker thread: on a network filesystem a stat can block
for seconds, and this loop may share its event loop with the rest of the
daemon.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup, TaskStatus
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from calstream.steps.exposure import (
    UNCAL_REQUIRED_EXTENSIONS,
    BadExposure,
    describe_exposure,
    missing_extensions,
    uncal_name,
)
from calstream.steps.fitsfile import FitsStatus, file_digest, fits_layout
from calstream.steps.naming import BadName, parse_exposure_name

log = logging.getLogger("calstream.watcher")

# Names writers use while a file is in flight; the final name arrives by
# rename, which the observer reports as a create or move on that name.
IGNORED_SUFFIXES = (".part", ".tmp", ".filepart", ".partial", "~")

# Reading a file we watch makes inotify report open, close-no-write and
# attrib events on it; listening to those would make every check trigger the
# next one.
_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent]

_UNREADABLE_ATTEMPTS = 5

Sig = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns


@dataclass(frozen=True)
class Arrival:
    path: Path
    exposure_id: str
    digest: str  # "sha256:<hex>"
    size: int
    header: dict[str, Any]  # calstream.steps.exposure.EXPOSURE_KEYWORDS present
    detected_at: float  # epoch seconds when this content was first seen
    source: str  # "watch" | "startup-scan"


@dataclass(frozen=True)
class Rejection:
    path: Path  # where the file was in the inbox
    quarantined_to: Path | None  # None if it could not be moved
    reason: str
    exposure_id: str | None
    digest: str | None
    detected_at: float


@dataclass(frozen=True)
class WatcherStats:
    seen: int  # distinct file contents picked up
    announced: int  # on_arrival calls that succeeded
    duplicates: int  # contents already announced, skipped
    recorded: int  # start-up files whose products exist: ledger only
    rejected: int
    pending: int  # tracked now: settling, incomplete or awaiting a retry
    retrying: int  # arrivals and rejections whose callback failed, awaiting retry
    errors: int  # failed callbacks and unexpected errors, cumulative


@dataclass(eq=False)
class _Track:
    path: Path
    source: str
    detected_at: float
    sig: Sig | None = None
    changed_at: float = 0.0  # monotonic; when sig last changed
    incomplete_sig: Sig | None = None  # sig at which the structure was found short
    incomplete_reason: str = ""
    arrival: Arrival | None = None  # ready; waiting for (re)announcement
    failures: int = 0
    next_check: float = 0.0  # monotonic
    retry_at: float = 0.0  # monotonic; backoff after a failure
    busy: bool = False
    touched: bool = False  # an event came in while a step was running


@dataclass(eq=False)
class _PendingReject:
    rejection: Rejection
    failures: int = 1
    retry_at: float = 0.0
    busy: bool = False


class _Ledger:
    """What has been announced, keyed by (exposure id, digest).

    Also a digest cache: a start-up scan of a large inbox would otherwise
    re-hash every file. A row is reused only when path, size, mtime, inode
    and ctime all match; a replaced or rewritten file changes at least the
    inode or the ctime, which no writer can set.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Used from worker threads one at a time (a CapacityLimiter of 1).
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS announced (
                exposure_id TEXT NOT NULL,
                digest TEXT NOT NULL,
                path TEXT NOT NULL,
                size INTEGER, mtime_ns INTEGER, inode INTEGER, ctime_ns INTEGER,
                announced_at REAL,  -- NULL: products existed at start-up, not announced
                recorded_at REAL NOT NULL,
                source TEXT NOT NULL,
                PRIMARY KEY (exposure_id, digest))"""
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS announced_path ON announced(path)")

    def has(self, exposure_id: str, digest: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM announced WHERE exposure_id = ? AND digest = ?", (exposure_id, digest)
        ).fetchone()
        return row is not None

    def cached_digest(self, path: Path, exposure_id: str, sig: Sig) -> str | None:
        row = self._db.execute(
            "SELECT digest FROM announced WHERE path = ? AND exposure_id = ? AND size = ? "
            "AND mtime_ns = ? AND inode = ? AND ctime_ns = ? ORDER BY recorded_at DESC LIMIT 1",
            (str(path), exposure_id, *sig),
        ).fetchone()
        return row[0] if row else None

    def record(self, a: Arrival, sig: Sig, *, announced: bool) -> None:
        now = time.time()
        self._db.execute(
            """INSERT INTO announced VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (exposure_id, digest) DO UPDATE SET
                 path = excluded.path, size = excluded.size, mtime_ns = excluded.mtime_ns,
                 inode = excluded.inode, ctime_ns = excluded.ctime_ns,
                 announced_at = COALESCE(excluded.announced_at, announced.announced_at),
                 recorded_at = excluded.recorded_at, source = excluded.source""",
            (
                a.exposure_id,
                a.digest,
                str(a.path),
                *sig,
                now if announced else None,
                now,
                a.source if announced else "products-exist",
            ),
        )

    def close(self) -> None:
        self._db.close()


class _Handler(FileSystemEventHandler):
    def __init__(self, notify: Callable[[str | bytes], None]) -> None:
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            self._notify(event.dest_path)
        else:
            self._notify(event.src_path)


def _sig(st: os.stat_result) -> Sig:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def _ident(path: Path) -> str | None:
    try:
        return parse_exposure_name(path.name).exposure_id
    except BadName:
        return None


def _extra(exposure_id: str | None, path: Path) -> dict[str, Any]:
    # The fields daemon/operations/logs.py puts on every line.
    return {"exposure_id": exposure_id, "stage": "watcher", "path": str(path)}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


class Watcher:
    def __init__(
        self,
        inbox: Path,
        quarantine: Path,
        ledger_path: Path,
        *,
        on_arrival: Callable[[Arrival], Awaitable[None]],
        on_reject: Callable[[Rejection], Awaitable[None]],
        has_products: Callable[[str, str], bool],
        polling: bool = False,
        poll_interval: float = 1.0,
        settle_seconds: float = 0.5,
        incomplete_timeout: float = 120.0,
        recursive: bool = False,
        rescan_interval: float = 30.0,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        required_extensions: tuple[str, ...] = UNCAL_REQUIRED_EXTENSIONS,
        io_concurrency: int = 4,
    ) -> None:
        self.inbox = Path(inbox).absolute()
        self.quarantine = Path(quarantine).absolute()
        self.ledger_path = Path(ledger_path).absolute()
        if self.quarantine == self.inbox:
            raise ValueError("the quarantine directory must not be the inbox")
        self._on_arrival = on_arrival
        self._on_reject = on_reject
        self._has_products = has_products
        self.polling = polling
        self.poll_interval = poll_interval
        self.settle_seconds = settle_seconds
        self.incomplete_timeout = incomplete_timeout
        self.recursive = recursive
        self.rescan_interval = rescan_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.required_extensions = tuple(required_extensions)
        # How often tracked files are stat'ed: the safety net when events are
        # missed, and the clock for settle and incomplete timeouts.
        self._tick = max(0.02, min(settle_seconds / 2, poll_interval, 1.0))

        self._lock = threading.Lock()  # guards _incoming and _wake_scheduled
        self._incoming: set[Path] = set()
        self._wake_scheduled = False
        self._wake = anyio.Event()
        self._token: anyio.lowlevel.EventLoopToken | None = None

        self._tracks: dict[Path, _Track] = {}
        self._done: dict[Path, Sig] = {}  # handled files still in the inbox
        self._in_flight: set[tuple[str, str]] = set()
        self._rejects: list[_PendingReject] = []
        self._ledger: _Ledger | None = None
        self._db_limiter = anyio.CapacityLimiter(1)
        self._io_limiter = anyio.CapacityLimiter(io_concurrency)
        self._counts = dict.fromkeys(
            ("seen", "announced", "duplicates", "recorded", "rejected", "errors"), 0
        )

    # ------------------------------------------------------------ public

    def stats(self) -> WatcherStats:
        return WatcherStats(
            **self._counts,
            pending=len(self._tracks),
            retrying=sum(1 for t in self._tracks.values() if t.failures and t.arrival)
            + len(self._rejects),
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled. ``task_status.started()`` is called once the
        observer is live and the start-up scan has been processed (files not
        yet settled or complete stay tracked)."""
        self._token = anyio.lowlevel.current_token()
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.quarantine.mkdir(parents=True, exist_ok=True)
        self._ledger = await self._db(_Ledger, self.ledger_path)
        observer = None
        try:
            # The observer starts before the scan so that nothing written
            # between the two is missed; a path seen by both is tracked once.
            observer = await anyio.to_thread.run_sync(self._start_observer)
            async with anyio.create_task_group() as tg:
                await self._startup_scan()
                log.info(
                    "watching %s (%s); %d file(s) still tracked after the start-up scan",
                    self.inbox,
                    "polling" if isinstance(observer, PollingObserver) else "inotify",
                    len(self._tracks),
                    extra=_extra(None, self.inbox),
                )
                task_status.started()
                await self._loop(tg)
        finally:
            with anyio.CancelScope(shield=True):
                if observer is not None:
                    observer.stop()
                    await anyio.to_thread.run_sync(observer.join)
                await self._db(self._ledger.close)

    # ------------------------------------------------------------ observer side

    def _start_observer(self) -> Any:
        handler = _Handler(self._from_observer)
        if not self.polling:
            observer = Observer()
            try:
                observer.schedule(
                    handler, str(self.inbox), recursive=self.recursive, event_filter=_EVENTS
                )
                observer.start()
                return observer
            except OSError as exc:
                # inotify instance/watch limits are per user and easily hit on
                # shared hosts; polling is slower but loses nothing.
                log.warning(
                    "inotify unavailable for %s (%s); falling back to polling",
                    self.inbox,
                    exc,
                    extra=_extra(None, self.inbox),
                )
        observer = PollingObserver(timeout=self.poll_interval)
        observer.schedule(handler, str(self.inbox), recursive=self.recursive, event_filter=_EVENTS)
        observer.start()
        return observer

    def _from_observer(self, raw: str | bytes) -> None:
        """Runs in the observer thread."""
        path = Path(os.fsdecode(raw))
        if not self._is_candidate(path):
            return
        with self._lock:
            self._incoming.add(path)
            if self._wake_scheduled:
                return  # a write burst becomes one wake-up
            self._wake_scheduled = True
        try:
            anyio.from_thread.run_sync(self._wake_up, token=self._token)
        except Exception:
            pass  # the event loop is gone: we are shutting down

    def _wake_up(self) -> None:
        self._wake.set()

    def _drain(self) -> set[Path]:
        with self._lock:
            paths, self._incoming = self._incoming, set()
            self._wake_scheduled = False
        return paths

    def _is_candidate(self, path: Path) -> bool:
        name = path.name
        if name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
            return False
        if path == self.ledger_path or name.startswith(self.ledger_path.name + "-"):
            return False  # sqlite's -journal/-wal beside a ledger kept in the inbox
        if self.recursive:
            try:
                rel = path.relative_to(self.inbox)
            except ValueError:
                return False
            if path.is_relative_to(self.quarantine):
                return False
            return not any(part.startswith(".") for part in rel.parts[:-1])
        return path.parent == self.inbox

    def _list_inbox(self) -> dict[Path, Sig]:
        """Runs in a thread: stat only, never opens a file."""
        found: dict[Path, Sig] = {}
        dirs = [self.inbox]
        while dirs:
            d = dirs.pop()
            try:
                entries = list(os.scandir(d))
            except OSError as exc:
                log.warning("cannot list %s: %s", d, exc, extra=_extra(None, d))
                continue
            for e in entries:
                p = Path(e.path)
                try:
                    st = e.stat()
                except OSError:
                    continue  # vanished between listing and stat
                if stat.S_ISDIR(st.st_mode):
                    if (
                        self.recursive
                        and not e.name.startswith(".")
                        and not p.is_relative_to(self.quarantine)
                    ):
                        dirs.append(p)
                elif stat.S_ISREG(st.st_mode) and self._is_candidate(p):
                    found[p] = _sig(st)
        return found

    # ------------------------------------------------------------ the loop

    async def _startup_scan(self) -> None:
        listing = await anyio.to_thread.run_sync(self._list_inbox)
        log.info(
            "start-up scan of %s: %d file(s)",
            self.inbox,
            len(listing),
            extra=_extra(None, self.inbox),
        )
        async with anyio.create_task_group() as tg:
            for path in sorted(listing):
                t = self._track(path, "startup-scan")
                t.busy = True
                tg.start_soon(self._step, t)

    async def _loop(self, tg: TaskGroup) -> None:
        next_rescan = time.monotonic() + self.rescan_interval
        while True:
            self._wake = anyio.Event()
            now = time.monotonic()
            for path in self._drain():
                t = self._track(path, "watch")
                t.next_check = min(t.next_check, now)
                t.touched = t.busy
            if now >= next_rescan:
                next_rescan = now + self.rescan_interval
                await self._rescan()
            now = time.monotonic()
            wake_at = next_rescan
            for t in list(self._tracks.values()):
                if t.busy:
                    continue
                due = max(t.next_check, t.retry_at)
                if due <= now:
                    t.busy = True
                    tg.start_soon(self._step, t)
                else:
                    wake_at = min(wake_at, due)
            for r in self._rejects:
                if r.busy:
                    continue
                if r.retry_at <= now:
                    r.busy = True
                    tg.start_soon(self._retry_reject, r)
                else:
                    wake_at = min(wake_at, r.retry_at)
            # A step that finishes sets the event, so its new next_check is
            # taken into account without polling here.
            with anyio.move_on_after(max(0.0, wake_at - time.monotonic())):
                await self._wake.wait()

    async def _rescan(self) -> None:
        try:
            listing = await anyio.to_thread.run_sync(self._list_inbox)
        except Exception:
            self._counts["errors"] += 1
            log.exception(
                "rescan of %s failed",
                self.inbox,
                extra=_extra(None, self.inbox),
            )
            return
        for path, sig in listing.items():
            if path not in self._tracks and self._done.get(path) != sig:
                log.info(
                    "%s: found by rescan (an event was missed or coalesced)",
                    _ident(path) or path.name,
                    extra=_extra(_ident(path), path),
                )
                self._track(path, "watch")
        for path in list(self._done):
            if path not in listing:
                del self._done[path]

    def _track(self, path: Path, source: str) -> _Track:
        t = self._tracks.get(path)
        if t is None:
            t = self._tracks[path] = _Track(path, source, detected_at=time.time())
        return t

    def _forget(self, t: _Track, *, still_there: bool) -> None:
        self._tracks.pop(t.path, None)
        if still_there and t.sig is not None:
            self._done[t.path] = t.sig
        if t.touched:
            # The file may have been replaced while we were busy with it; a
            # fresh look costs one stat if it was not.
            self._track(t.path, "watch")

    def _backoff(self, failures: int) -> float:
        return min(self.retry_max, self.retry_initial * 2 ** max(0, failures - 1))

    async def _step(self, t: _Track) -> None:
        t.touched = False
        try:
            await self._advance(t)
        except Exception:
            # Never let one file stop the watcher; try it again later.
            self._counts["errors"] += 1
            t.failures += 1
            t.retry_at = time.monotonic() + self._backoff(t.failures)
            self._log(logging.ERROR, "unexpected error; retrying", t.path, exc_info=True)
        finally:
            t.busy = False
            self._kick()

    def _kick(self) -> None:
        self._wake.set()

    async def _stat(self, path: Path) -> Sig | None:
        try:
            st = await anyio.to_thread.run_sync(os.stat, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _sig(st) if stat.S_ISREG(st.st_mode) else None

    async def _advance(self, t: _Track) -> None:
        sig = await self._stat(t.path)
        now = time.monotonic()
        if sig is None:
            self._log(logging.DEBUG, "gone from the inbox before it was handled", t.path)
            self._forget(t, still_there=False)
            return
        if sig != t.sig:
            first = t.sig is None
            if first and self._done.get(t.path) == sig:
                self._forget(t, still_there=True)  # an event about a file already handled
                return
            if first:
                self._counts["seen"] += 1
                # A file already older than the settle time (found at start-up
                # or by a rescan) needs no further wait.
                age = max(0.0, min(time.time() - sig[1] / 1e9, self.settle_seconds))
                t.changed_at = now - age
            else:
                # Still being written (or replaced): what gets announced is
                # a live arrival, first seen when the track began.
                t.changed_at = now
                t.source = "watch"
            t.sig = sig
            t.arrival = None
            t.incomplete_sig = None
            t.failures = 0
            t.retry_at = 0.0
        settled_at = t.changed_at + self.settle_seconds
        if now < settled_at:
            t.next_check = min(settled_at, now + self._tick)
            return

        if t.arrival is not None:
            await self._announce(t, sig)
            return

        if t.incomplete_sig == sig:
            if now - t.changed_at >= self.incomplete_timeout:
                await self._reject(
                    t,
                    f"{t.path.name}: truncated: {t.incomplete_reason}; unchanged for "
                    f"{now - t.changed_at:.0f} s (incomplete_timeout {self.incomplete_timeout:g} s)",
                    None,
                )
            else:
                t.next_check = min(t.changed_at + self.incomplete_timeout, now + self._tick)
            return

        name_problem = self._name_problem(t.path)
        if name_problem:
            await self._reject(t, name_problem, None)
            return

        try:
            layout = await self._io(fits_layout, t.path)
        except FileNotFoundError:
            self._forget(t, still_there=False)
            return
        except OSError as exc:
            await self._unreadable(t, exc)
            return
        if layout.size != sig[0]:
            t.next_check = now  # changed while we looked; start over
            return
        if layout.status in (FitsStatus.NOT_FITS, FitsStatus.CORRUPT):
            await self._reject(t, f"{t.path.name}: {layout.reason}", None)
            return
        reason = layout.reason if not layout.complete else ""
        if not reason:
            missing = missing_extensions(layout, self.required_extensions)
            if missing:
                reason = (
                    f"valid FITS with {layout.n_hdus} HDU(s) but no {', '.join(missing)} "
                    "extension yet"
                )
        if reason:
            if t.incomplete_sig is None:
                self._log(logging.INFO, f"waiting: {reason}", t.path)
            t.incomplete_sig, t.incomplete_reason = sig, reason
            t.next_check = now + self._tick
            return

        try:
            info = await self._io(describe_exposure, t.path)
            digest = await self._db(self._ledger.cached_digest, t.path, info.exposure_id, sig)
            if digest is None:
                digest = await self._io(file_digest, t.path)
        except BadExposure as exc:
            await self._reject(t, str(exc), await self._digest_or_none(t.path))
            return
        except FileNotFoundError:
            self._forget(t, still_there=False)
            return
        except OSError as exc:
            await self._unreadable(t, exc)
            return
        if await self._stat(t.path) != sig:
            t.next_check = time.monotonic()  # rewritten while we read it
            return
        t.arrival = Arrival(
            path=t.path,
            exposure_id=info.exposure_id,
            digest=digest,
            size=sig[0],
            header=info.header,
            detected_at=t.detected_at,
            source=t.source,
        )
        t.failures = 0
        await self._announce(t, sig)

    def _name_problem(self, path: Path) -> str | None:
        try:
            uncal_name(path.name)
        except BadExposure as exc:
            return str(exc)
        return None

    async def _announce(self, t: _Track, sig: Sig) -> None:
        a = t.arrival
        assert a is not None
        key = (a.exposure_id, a.digest)
        if key in self._in_flight:
            t.next_check = time.monotonic() + self._tick  # the same content under another path
            return
        self._in_flight.add(key)
        try:
            if a.source == "startup-scan":
                if await self._products_exist(a):
                    await self._db(self._ledger.record, a, sig, announced=False)
                    self._counts["recorded"] += 1
                    self._log(logging.INFO, "products exist; recorded, not announced", t.path, a)
                    self._forget(t, still_there=True)
                    return
                again = await self._db(self._ledger.has, *key)
                what = (
                    "re-announcing (announced before, no products yet)" if again else "announcing"
                )
            elif await self._db(self._ledger.has, *key):
                self._counts["duplicates"] += 1
                self._log(logging.INFO, f"already announced ({a.digest}); skipped", t.path, a)
                self._forget(t, still_there=True)
                return
            else:
                what = "announcing"
            self._log(logging.INFO, f"{what} ({a.digest}, {a.size} bytes)", t.path, a)
            try:
                await self._on_arrival(a)
            except Exception as exc:
                self._counts["errors"] += 1
                t.failures += 1
                delay = self._backoff(t.failures)
                t.retry_at = time.monotonic() + delay
                self._log(
                    logging.WARNING,
                    f"on_arrival failed (attempt {t.failures}): {exc!r}; retrying in {delay:g} s",
                    t.path,
                    a,
                )
                return
            self._counts["announced"] += 1
            try:
                # Shielded: a shutdown landing between the announcement and
                # this write would otherwise make the next start re-hash and
                # re-announce the file.
                with anyio.CancelScope(shield=True):
                    await self._db(self._ledger.record, a, sig, announced=True)
            except Exception:
                # Announced all the same; a later duplicate is harmless since
                # event ids downstream are deterministic.
                self._counts["errors"] += 1
                self._log(
                    logging.ERROR,
                    "announced, but the ledger write failed",
                    t.path,
                    a,
                    exc_info=True,
                )
            self._forget(t, still_there=True)
        finally:
            self._in_flight.discard(key)

    async def _products_exist(self, a: Arrival) -> bool:
        try:
            return bool(await anyio.to_thread.run_sync(self._has_products, a.exposure_id, a.digest))
        except Exception:
            # Announcing again is a redelivery with a deterministic event id:
            # cheaper than risking a file that never gets processed.
            self._counts["errors"] += 1
            self._log(
                logging.WARNING, "has_products failed; announcing anyway", a.path, a, exc_info=True
            )
            return False

    async def _digest_or_none(self, path: Path) -> str | None:
        """For the quarantine record, so an operator can tell redeliveries apart."""
        try:
            return await self._io(file_digest, path)
        except OSError:
            return None

    async def _unreadable(self, t: _Track, exc: OSError) -> None:
        # NFS and friends have transient errors; a few tries before calling it bad.
        t.failures += 1
        if t.failures >= _UNREADABLE_ATTEMPTS:
            await self._reject(t, f"{t.path.name}: unreadable: {exc}", None)
            return
        delay = self._backoff(t.failures)
        t.retry_at = time.monotonic() + delay
        self._log(logging.WARNING, f"cannot read ({exc}); retrying in {delay:g} s", t.path)

    async def _reject(self, t: _Track, reason: str, digest: str | None) -> None:
        eid = _ident(t.path)
        self._counts["rejected"] += 1
        try:
            dest = await anyio.to_thread.run_sync(
                self._move_to_quarantine, t.path, reason, eid, digest, t.detected_at
            )
        except Exception as exc:
            dest = None
            self._log(logging.ERROR, f"could not quarantine ({exc!r})", t.path)
        self._log(
            logging.WARNING,
            f"rejected: {reason}" + (f" -> {dest}" if dest else " (left in the inbox)"),
            t.path,
        )
        # Left in the inbox, it is remembered so the rescan does not reject it
        # again until it changes.
        self._forget(t, still_there=dest is None)
        rej = Rejection(
            path=t.path,
            quarantined_to=dest,
            reason=reason,
            exposure_id=eid,
            digest=digest,
            detected_at=t.detected_at,
        )
        await self._notify_reject(_PendingReject(rej, failures=0))

    async def _notify_reject(self, r: _PendingReject) -> bool:
        try:
            await self._on_reject(r.rejection)
            return True
        except Exception as exc:
            self._counts["errors"] += 1
            r.failures += 1
            delay = self._backoff(r.failures)
            r.retry_at = time.monotonic() + delay
            if r not in self._rejects:
                self._rejects.append(r)
            self._log(
                logging.WARNING,
                f"on_reject failed (attempt {r.failures}): {exc!r}; retrying in {delay:g} s",
                r.rejection.path,
            )
            return False

    async def _retry_reject(self, r: _PendingReject) -> None:
        try:
            if await self._notify_reject(r):
                self._rejects.remove(r)
        finally:
            r.busy = False
            self._kick()

    def _move_to_quarantine(
        self, path: Path, reason: str, eid: str | None, digest: str | None, detected_at: float
    ) -> Path:
        """Runs in a thread. Never overwrites: an earlier file of the same
        name may be the evidence an operator needs."""
        self.quarantine.mkdir(parents=True, exist_ok=True)
        name = path.name
        stem, ext = (name[:-5], ".fits") if name.endswith(".fits") else os.path.splitext(name)
        n = 0
        while True:
            dest = self.quarantine / (name if n == 0 else f"{stem}.{n}{ext}")
            try:
                # Claim the name atomically, then move onto the claim.
                os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                break
            except FileExistsError:
                n += 1
        try:
            try:
                os.replace(path, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.move(path, dest)  # another filesystem: copy, then unlink
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        now = time.time()
        lines = [
            f"reason: {reason}",
            f"file: {path}",
            f"exposure_id: {eid or '-'}",
            f"digest: {digest or '-'}",
            f"detected_at: {_iso(detected_at)}",
            f"quarantined_at: {_iso(now)}",
        ]
        dest.with_name(dest.name + ".reason.txt").write_text("\n".join(lines) + "\n")
        return dest

    # ------------------------------------------------------------ helpers

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        # Abandoned on cancel: hashing a large file must not delay shutdown.
        return await anyio.to_thread.run_sync(
            fn, *args, limiter=self._io_limiter, abandon_on_cancel=True
        )

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._db_limiter)

    def _log(
        self,
        level: int,
        msg: str,
        path: Path,
        arrival: Arrival | None = None,
        *,
        exc_info: bool = False,
    ) -> None:
        eid = arrival.exposure_id if arrival else _ident(path)
        log.log(
            level,
            "%s: %s",
            eid or path.name,
            msg,
            exc_info=exc_info,
            extra=_extra(eid, path),
        )
