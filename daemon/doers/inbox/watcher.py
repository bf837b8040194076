"""The inbox watcher's loop: tracked files, each looked at until it is
announced, rejected or gone.

Events, the polling observer and a periodic rescan (observer_bridge.py; the
watch kept on the inbox there is now: watch_keeper.py) put paths on the list
of tracked files. Each look at a file (tracked_file.py) gathers one fact
(stat, FITS layout, identity and digest), asks the pure decider
``deciders/inbox_file.py`` what follows (it lists every retry and its
bound), and carries it out: wait, look deeper, announce (announcer.py),
reject (quarantine.py), retry or forget it.
Everything that touches the filesystem, the ledger or a caller's sync
callback runs in a worker thread: on a network filesystem a stat can block
for seconds, and this loop may share its event loop with the daemon.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

from calstream.daemon.deciders import inbox_file as decide
from calstream.daemon.deciders.inbox_file import InboxRules, Sig
from calstream.daemon.doers.file_reads import READ_SECONDS, FileReads, ReadHung
from calstream.daemon.doers.inbox.announcer import Announcer
from calstream.daemon.doers.inbox.ledger import Ledger
from calstream.daemon.doers.inbox.observer_bridge import InboxScope, ObserverBridge
from calstream.daemon.doers.inbox.quarantine import Quarantine
from calstream.daemon.doers.inbox.quarantine_leftovers import leftovers
from calstream.daemon.doers.inbox.reports import (
    Arrival,
    Counts,
    Rejection,
    WatcherStats,
    log,
    log_fields,
    log_file,
)
from calstream.daemon.doers.inbox.tracked_file import FileSteps, Track
from calstream.daemon.doers.inbox.watch_keeper import WatchKeeper
from calstream.daemon.doers.parking import Parking, until_done
from calstream.steps.exposure import UNCAL_REQUIRED_EXTENSIONS

# Files looked at at once (steps under way), at the start-up scan and after.
# A few are read at a time (file_reads.py); each step waiting held ~10 kB,
# and the scan began one for every file in the inbox (20,000 files: 190 MB
# more at the start), the loop one for every file of a burst, whose stats
# the watch keeper's stat of the inbox then waited behind.
STEPS_AT_ONCE = 64

T = TypeVar("T")


class Watcher(FileSteps):
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
        read_seconds: float = READ_SECONDS,  # a read of the inbox unanswered this long hung
        parking: Callable[[str], Parking] | None = None,  # a file the quarantine refuses
        # The infrastructure behind a failed announcement (the broker's, a
        # disk's), for its parking; None: not known ("unknown").
        fault_of: Callable[[BaseException], str | None] = lambda exc: None,
        roots: Sequence[Path] = (),  # where a link may lead (the admission's); default the inbox
    ) -> None:
        inbox, quarantine = Path(inbox).absolute(), Path(quarantine).absolute()
        if quarantine == inbox:
            raise ValueError("the quarantine directory must not be the inbox")
        self.rules = InboxRules(
            settle_seconds=settle_seconds, incomplete_timeout=incomplete_timeout,
            retry_initial=retry_initial, retry_max=retry_max,
            required_extensions=tuple(required_extensions),
            look_interval=decide.look_interval(settle_seconds, poll_interval))
        self.scope = InboxScope(inbox, quarantine, Path(ledger_path).absolute(), recursive)
        self.roots = [Path(r).absolute() for r in roots] or [inbox]
        self.reads = FileReads(io_concurrency, read_seconds, of="the inbox")
        self.events = ObserverBridge(self.scope, self._kick, polling=polling,
                                     poll_interval=poll_interval, reads=self.reads)
        self._parking, self._fault_of = parking, fault_of
        self.rescan_interval = rescan_interval
        self._counts = Counts()
        self.quarantine = Quarantine(quarantine, on_reject, self.rules, self._counts, self.reads,
                                     parking=parking)
        self._on_arrival = on_arrival
        self._has_products = has_products
        self._announcer: Announcer | None = None  # needs the ledger: made in run()
        self._wake = anyio.Event()
        self._tracks: dict[Path, Track] = {}
        self._done: dict[Path, Sig] = {}  # handled files still in the inbox
        self.keeper = WatchKeeper(self.events, self.made_dirs, parking, self.reads)
        self._found = itertools.count()

    @property
    def inbox(self) -> Path:
        return self.scope.inbox

    def stats(self) -> WatcherStats:
        return WatcherStats(
            **dataclasses.asdict(self._counts),
            pending=len(self._tracks),
            retrying=sum(1 for t in self._tracks.values() if t.state.failures and t.arrival)
            + len(self.quarantine.pending),
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled. ``task_status.started()`` is called once the
        observer is live and the start-up scan has been processed (files not
        yet settled or complete stay tracked)."""
        # Timed as the inbox's reads: made on the event loop, a mount gone
        # silent (since the daemon's start checks made them) froze the whole
        # daemon before the timed listing's turn came.
        await self._once_it_answers(self.made_dirs)
        ledger = await self._ledger_opened()
        self._announcer = Announcer(ledger, self._on_arrival, self._has_products, self._counts,
                                    self.reads)
        try:
            # The observer starts before the scan so that nothing written
            # between the two is missed; a path seen by both is tracked once.
            await self._once_it_answers(self.events.start)
            async with anyio.create_task_group() as tg:
                await self._settle_leftovers(tg)
                await self._startup_scan()
                log.info("watching %s (%s); %d file(s) still tracked after the start-up scan",
                         self.inbox, self.events.kind, len(self._tracks),
                         extra=log_fields(None, self.inbox))
                task_status.started()
                await self._loop(tg)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.events.stop()
                except ReadHung as exc:  # its threads are left: they end with the process
                    log.warning("the inbox's watch left stopping: %s", exc,
                                extra=log_fields(None, self.inbox))
                await ledger.close()

    async def _ledger_opened(self) -> Ledger:
        """The ledger, waited for while the work directory does not answer:
        parked (work_dir_hung), not a start frozen unseen (ledger.py)."""
        def hung(exc: BaseException) -> str | None:
            return exc.cause if isinstance(exc, ReadHung) else None

        def opening() -> Awaitable[Ledger]:
            return Ledger.open(self.scope.ledger_path, self.reads)

        if self._parking is not None:
            return await until_done(opening, self._parking("the watcher's ledger"), hung)
        while True:
            try:
                return await opening()
            except ReadHung as exc:
                log.warning("the watcher's ledger: %s; again in %gs", exc, self.rules.retry_max,
                            extra=log_fields(None, self.scope.ledger_path))
                await anyio.sleep(self.rules.retry_max)

    async def made_dirs(self) -> None:
        """The inbox and the quarantine made (as they are, if they exist),
        timed as a read of the inbox (ReadHung)."""
        await self.reads.timed(lambda _: self._make_dirs(), self.inbox, self.reads.read_seconds,
                               what="directories' making")

    async def _settle_leftovers(self, tg: TaskGroup) -> None:
        """What a stop left in the quarantine (quarantine_leftovers.py): moves
        that did not finish undone before the start-up scan judges their
        files again, and the dead letters never sent sent now (retried as
        every report is). Awaited, never abandoned: run beside the moves to
        come, it could undo one under way."""
        found = await self._once_it_answers(lambda: self.reads.waited(
            lambda d: leftovers(d, self.inbox), self.quarantine.directory,
            self.reads.read_seconds,
            what="look at what a stop left in quarantine",
            late=lambda exc: log.warning("the quarantine's look at start: %s; waited for", exc,
                                         extra=log_fields(None, self.inbox))))
        if found.unreported or found.cleaned or found.later:
            log.warning("quarantine at start: %d file(s) quarantined before a stop without "
                        "their dead letter: sent now; %d move(s) a stop cut off: undone, the "
                        "file judged again%s", len(found.unreported), found.cleaned,
                        f"; {found.later} more at the next start" if found.later else "",
                        extra=log_fields(None, self.quarantine.directory))
        for rejection in found.unreported:
            tg.start_soon(self._then_kick, self.quarantine.report(rejection))

    def _make_dirs(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.quarantine.directory.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ the loop

    async def _listing_once_it_answers(self) -> dict[Path, Sig]:
        """The inbox's files, waited for while its storage does not answer."""
        return await self._once_it_answers(
            lambda: self.reads.listing(self.scope.list_files, self.inbox))

    async def _once_it_answers(self, read: Callable[[], Awaitable[T]]) -> T:
        """``read()`` of the inbox, waited for while its storage does not
        answer: parked and said (the watch keeper's inbox_hung), not unseen."""
        while True:
            try:
                return await read()
            except ReadHung as exc:
                await anyio.sleep(self.keeper.unanswered(exc))

    async def _startup_scan(self) -> None:
        listing = await self._listing_once_it_answers()
        log.info("start-up scan of %s: %d file(s)", self.inbox, len(listing),
                 extra=log_fields(None, self.inbox))
        paths = iter(sorted(listing))  # one listing for every taker: each path once

        async def take_up() -> None:
            for path in paths:
                t = self._track(path, "startup-scan")
                t.busy = True
                await self._step(t)

        async with anyio.create_task_group() as tg:
            for _ in range(min(STEPS_AT_ONCE, len(listing))):
                tg.start_soon(take_up)

    async def _loop(self, tg: TaskGroup) -> None:
        next_rescan = time.monotonic() + self.rescan_interval
        while True:
            self._wake = anyio.Event()
            now = time.monotonic()
            for path, writer_done in self.events.drain().items():
                t = self._track(path, "watch")
                t.next_check = min(t.next_check, now)
                t.touched = t.busy
                t.writer_done = writer_done
            rewatched = now >= self.keeper.next_check and await self.keeper.check(now)
            if now >= next_rescan or rewatched:  # listed at once: what came unwatched
                next_rescan = now + self.rescan_interval
                await self._rescan()
            now = time.monotonic()
            wake_at = min(next_rescan, self.keeper.next_check)
            # Due files beyond STEPS_AT_ONCE wait, in the order found, for a
            # step to end (it wakes the loop).
            steps = sum(1 for t in self._tracks.values() if t.busy)
            for t in list(self._tracks.values()):
                if t.busy:
                    continue
                due = max(t.next_check, t.retry_at)
                if due > now:
                    wake_at = min(wake_at, due)
                elif steps < STEPS_AT_ONCE:
                    t.busy = True
                    steps += 1
                    tg.start_soon(self._step, t)
            reports, next_report = self.quarantine.due(now)
            for r in reports:
                tg.start_soon(self._then_kick, self.quarantine.retry(r))
            if next_report is not None:
                wake_at = min(wake_at, next_report)
            # A step that finishes sets the event, so its new next_check is
            # taken into account without polling here.
            with anyio.move_on_after(max(0.0, wake_at - time.monotonic())):
                await self._wake.wait()

    async def _rescan(self) -> None:
        try:
            listing = await self.reads.listing(self.scope.list_files, self.inbox)
        except ReadHung as exc:  # the watch keeper parks the inbox for it
            log.warning("rescan of %s: %s", self.inbox, exc, extra=log_fields(None, self.inbox))
            return
        except Exception:
            self._counts.errors += 1
            log.exception("rescan of %s failed", self.inbox, extra=log_fields(None, self.inbox))
            return
        for path, sig in listing.items():
            if path not in self._tracks and self._done.get(path) != sig:
                log_file(logging.INFO, "found by rescan (an event was missed or coalesced)", path)
                self._track(path, "watch")
        for path in list(self._done):
            if path not in listing:
                del self._done[path]

    async def reannounce(self) -> None:
        """Look at every file in the inbox again as at start: the broker lost
        its memory (the embedded one restarted), so what was announced and has
        no products yet is announced again (the ledger alone would skip it)."""
        # Timed as every read of the inbox: untimed, a silent mount held the
        # broker's recovery, in a thread no stop could cancel, unseen.
        listing = await self._listing_once_it_answers()
        self._done.clear()
        for path in listing:
            if path not in self._tracks:
                self._track(path, "startup-scan")
        self._kick()

    def _track(self, path: Path, source: str) -> Track:
        t = self._tracks.get(path)
        if t is None:
            t = self._tracks[path] = Track(path, source, detected_at=time.time(),
                                            first_seen=next(self._found))
        return t

    def _forget(self, t: Track, *, still_there: bool) -> None:
        self._tracks.pop(t.path, None)
        self.quarantine.resumed(t.path)  # gone while parked: no longer shown parked
        if t.parking is not None:  # announced, or gone, while its announcement was parked
            t.parking.resumed()
        if t.read_parking is not None:  # gone while its storage did not answer
            t.read_parking.resumed()
        if still_there and t.state.sig is not None:
            self._done[t.path] = t.state.sig
        if t.touched:
            # The file may have been replaced while we were busy with it; a
            # fresh look costs one stat if it was not.
            self._track(t.path, "watch")

    def _kick(self) -> None:
        self._wake.set()

    async def _then_kick(self, work: Awaitable[None]) -> None:
        try:
            await work
        finally:
            self._kick()
