"""Starting in a world that is not there yet: a start step waits for its broker,
disk or CRDS cache, then the start goes on by itself.

After a power cut brokers, file servers and daemons come up in any order. A
daemon that exits because its broker does not answer yet leaves the healing
to a service manager (a crash loop, and none at all outside one). So each
start step that meets an infrastructure fault is tried again with the parking
every running item gets (doers/parking.py: quick jittered retries, then a
re-check every ``park_recheck_seconds``, ``calstream_parked_items{stage="start"}``),
while the operations endpoint already answers: ``/readyz`` says what the
start waits for and since when, ``/healthz`` stays alive (a restart would
not help). The log says it at first, once when it parks, then at a falling
rate (REMINDERS), and once when it resumes.

What only a person can fix is not waited for: no CRDS settings at all, a
CRDS error about the rules rather than reaching them, a directory the
daemon has no permission for. Those raise ConfigError at once: one line,
exit status 2 (cli/main.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from calstream.daemon.deciders.retry_policy import Backoff
from calstream.daemon.doers.broker_probe import BrokerUndead, kill_if_wedged
from calstream.daemon.doers.broker_supervisor import CLIENT_LOGGERS, quiet_client_logs
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.file_reads import (
    INBOX_HUNG,
    READ_SECONDS,
    STORE_HUNG,
    WORK_DIR_HUNG,
    FileReads,
    ReadHung,
)
from calstream.daemon.doers.kafka import TopicsMissing, refused_settings, unreachable
from calstream.daemon.doers.kafka.clients import stopped
from calstream.daemon.doers.kafka.publisher import broker_fault
from calstream.daemon.doers.parking import Parking, until_done
from calstream.daemon.doers.start_roots import make_inbox, store_made, work_dir_made
from calstream.daemon.doers.work_dir_lock import WorkDirLock
from calstream.daemon.operations.config import Config, ConfigError
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.crds_env import CrdsCacheUnreachable, crds_settings, resolve_context
from calstream.steps.failures import (
    CRDS_LOOKUP,
    CRDS_REFERENCE_MISSING,
    CRDS_UNREACHABLE,
    error_text,
    infrastructure_cause,
)

log = logging.getLogger("calstream.start")

T = TypeVar("T")

START = "start"  # the stage label of the start's parked steps
BROKER_UNREACHABLE = "broker_unreachable"
TOPICS_MISSING = "topics_missing"
# "still waiting" lines 1 minute after the first failure, then 2, 4, 8 minutes
# apart, then every 15: the log shows it still waits, without a line per re-check.
REMINDERS = Backoff(first=60.0, cap=900.0)


class CrdsNotConfigured(ConfigError):
    pass


NOT_CONFIGURED = (
    "no CRDS context could be determined: set CRDS_PATH (and CRDS_SERVER_URL, or "
    "CRDS_CONTEXT for an offline cache), or crds_context. `calstream simulate DIR` builds a "
    "local offline cache and writes the settings for it in DIR/crds.env.")


def broker_cause(exc: BaseException) -> str | None:
    """The broker did not answer (no connection, a time-out), or lacks
    catalog topics this daemon may not create (an admin's to make, at a site
    that denies daemons Create): worth waiting for."""
    if isinstance(exc, TopicsMissing):
        return TOPICS_MISSING
    if isinstance(exc, BrokerUndead):  # the embedded one killed, held in the kernel
        return BROKER_UNREACHABLE
    return BROKER_UNREACHABLE if unreachable(exc) is not None or broker_fault(exc) else None


def broker_or_disk_cause(exc: BaseException) -> str | None:
    """A step that reads and writes both the broker and the work directory
    (the embedded broker's, made timed: ReadHung)."""
    return broker_cause(exc) or hung_or_disk_cause(exc)


def hung_or_disk_cause(exc: BaseException) -> str | None:
    """A step timed as the door's reads (its storage silent: ReadHung's
    cause) that writes a disk."""
    return exc.cause if isinstance(exc, ReadHung) else infrastructure_cause(exc)


def crds_cause(exc: BaseException) -> str | None:
    """Only CRDS out of reach (its server, its cache, a file of it) is waited
    for; CrdsNotConfigured and the rest stop the start."""
    cause = infrastructure_cause(exc)
    return cause if cause in (CRDS_UNREACHABLE, CRDS_REFERENCE_MISSING) else None


# Loggers that would repeat at every try what the first one said.
_REPEATING = {BROKER_UNREACHABLE: CLIENT_LOGGERS, CRDS_UNREACHABLE: ("CRDS",)}


class _Wait:
    """What one start step waits for, for /readyz and the reminders."""

    def __init__(self, what: str, cause: str, owner: str | None) -> None:
        self.what, self.cause, self.owner = what, cause, owner
        self.detail: str | None = None  # which topics are missing, and why
        self.since_wall, self.since = time.time(), time.monotonic()
        self.reminders = 0
        self.next_reminder = self.since + REMINDERS.delay(1)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since_wall))
        return (f"starting: waiting for {self.what} ({self.cause}) since {since}, "
                f"{time.monotonic() - self.since:.0f}s" + (f": {self.detail}" if self.detail
                                                           else ""))

    def remind(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now < self.next_reminder:
            return
        self.reminders += 1
        self.next_reminder = now + REMINDERS.delay(self.reminders + 1)
        log.warning("start: still waiting for %s (%s) after %.0fs: %s", self.what,
                    self.cause, now - self.since, error_text(exc),
                    extra={"stage": START, "fault": "infrastructure"})


class _Trying:
    """A start step at its first attempt, not failed yet: a broker that takes
    the connection and never answers holds it for request_timeout (30 s),
    when /readyz said only "starting"."""

    def __init__(self, what: str) -> None:
        self.what, self.since_wall, self.since = what, time.time(), time.monotonic()

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since_wall))
        return (f"starting: trying {self.what} since {since}, "
                f"{time.monotonic() - self.since:.0f}s (no answer yet)")


class StartWaits:
    """The daemon's start steps, each waiting out its infrastructure faults."""

    def __init__(self, cfg: Config, metrics: Metrics, *,
                 read_seconds: float = READ_SECONDS) -> None:
        self.cfg, self.metrics = cfg, metrics
        # The inbox's making, in threads that can be left (file_reads.py):
        # one left hung is not begun again until it returns.
        self._reads = FileReads(1, read_seconds, of="the daemon's directories")
        # Every step waiting now, oldest first: the daemon's start and the
        # planner's (on its own loop) can wait at once, and /readyz names each
        # (one slot showed whichever began last: an operator, and a test, saw
        # the planner's producer wait while the lease's was hidden).
        self.waits: list[_Wait] = []
        self.trying: list[_Trying] = []  # steps at their first attempt, until it fails
        self.done = False  # set by the daemon once every role runs

    async def inbox_made(self) -> None:
        """make_inbox, timed as the door's reads: in anyio's threads, on a
        silent (hung NFS) inbox mount, the start waited there for ever,
        shown only as "trying". ReadHung (inbox_hung) past its time; the
        step (hung_or_disk_cause) parks it and tries again."""
        await self._reads.timed(lambda _: make_inbox(self.cfg), self.cfg.inbox,
                                self._reads.read_seconds, what="making", cause=INBOX_HUNG)

    async def roots_made(self, lock: WorkDirLock | None = None,
                         then: Callable[[], Any] = lambda: None) -> None:
        """prepare_roots timed as inbox_made: the work directory (its lock,
        then ``then()``) as work_dir_hung, the product store as store_hung
        (untimed, a silent mount held the start for ever as "trying"). One
        left hung is not begun again until it returns: one lock taken."""
        cfg, seconds = self.cfg, self._reads.read_seconds
        await self._reads.timed(lambda _: (work_dir_made(cfg, lock), then()), cfg.work_dir,
                                seconds, what="making", cause=WORK_DIR_HUNG)
        await self._reads.timed(lambda _: store_made(cfg), cfg.products, seconds,
                                what="making", cause=STORE_HUNG)

    @property
    def reads(self) -> FileReads:
        """The daemon's timed calls on its work directory and store, on its
        event loop, kept across tries (the recovery of what a broker lost:
        broker_recovery.py): one left hung is not made again."""
        return self._reads

    async def on_work_dir(self, call: Callable[[], T]) -> T:
        """``call()``, a write in the work directory, timed as roots_made's:
        on the event loop's thread it froze the daemon (signals too)."""
        return await self._reads.timed(lambda _: call(), self.cfg.work_dir,
                                       self._reads.read_seconds, what="writing",
                                       cause=WORK_DIR_HUNG)

    @property
    def waiting(self) -> _Wait | None:
        """The step that began waiting last, if any."""
        return self.waits[-1] if self.waits else None

    def problems(self) -> list[str]:
        """Why /readyz says not ready while the daemon starts: each wait and
        each first attempt still under way, or "starting"; none once started
        and nothing waits (a step the planner tries later is no problem)."""
        # Copies: the planner's thread adds and removes its own.
        shown = [*self.waits, *(() if self.done else list(self.trying))]
        if shown:
            return [w.describe() for w in shown]
        return [] if self.done else ["starting"]

    def waiting_of(self, owner: str) -> bool:
        """Whether one of ``owner``'s steps waits now."""
        return any(w.owner == owner for w in self.waits)

    async def step(self, what: str, attempt: Callable[[], Awaitable[T]],
                   cause_of: Callable[[BaseException], str | None], *, stage: str = START,
                   max_attempts: int | None = None, owner: str | None = None) -> T:
        """``attempt()`` until no fault ``cause_of`` names stops it; any other error is raised.

        ``stage`` labels its park in the metrics (a step of the planner's
        restore keeps the planner's), ``max_attempts`` as Parking's, and
        ``owner`` lets /readyz tell whose wait it shows (waiting_of)."""
        parking = Parking(self.cfg, self.metrics, stage=stage, what=f"{stage}: {what}",
                          max_attempts=max_attempts)
        wait: _Wait | None = None
        quieted: tuple[str, ...] = ()
        first = _Trying(what)
        self.trying.append(first)

        def cause(exc: BaseException) -> str | None:
            nonlocal wait, quieted
            named = cause_of(exc)
            if named is None:
                return None
            if wait is None:
                wait = _Wait(what, named, owner)
                self.waits.append(wait)
                self.trying.remove(first)  # the wait says it now, since the first try
                wait.since_wall, wait.since = first.since_wall, first.since
                # aiokafka logs every failed connection, crds its "FATAL": said once.
                quieted = _REPEATING.get(named, ())
                quiet_client_logs(True, quieted)
            else:
                wait.cause = named
                wait.remind(exc)
            wait.detail = str(exc) if named == TOPICS_MISSING else None
            return named

        try:
            return await until_done(attempt, parking, cause)
        finally:
            if first in self.trying:
                self.trying.remove(first)
            if wait is not None:
                self.waits.remove(wait)  # only its own: another step may still wait
                quiet_client_logs(False, quieted)


async def settings_checked(cfg: Config, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``; when it fails with TLS or SASL configured, ConfigError
    if the broker refuses those settings (a certificate that does not
    verify, credentials it rejects): aiokafka reports them as a broker that
    does not answer, which the start would wait for for ever."""
    try:
        return await attempt()
    except TopicsMissing:
        raise  # the broker answered, with these settings
    except Exception:
        if cfg.security.protocol != "PLAINTEXT" and (problem := await refused_settings(cfg)):
            raise ConfigError(problem) from None
        raise


async def started(make: Callable[[], Any]) -> Any:
    """A Kafka client from ``make()``, started; one that failed to start is
    stopped (its connections closed) and the next attempt makes a new one."""
    client = make()
    try:
        await client.start()
    except BaseException:
        await stopped(client)
        raise
    return client


async def start_embedded(broker: EmbeddedBroker, waits: StartWaits) -> None:
    """The embedded broker started unless it runs. On the event loop's thread
    (tansu dies with the thread that started it), blocking it for tansu's
    start (tens of ms); its directory (tansu's HOME) made first, timed
    (work_dir_hung): a silent mount froze the whole daemon there. No probe
    file is written there since session 46: tansu writes nothing in it (its
    output goes to the daemon's log since session 45), so a full disk
    there is no reason to wait, and a start held a broker that died during
    it for a full disk while the supervisor's restart did not."""
    if not broker.alive():
        await waits.on_work_dir(broker.prepared)
        broker.start(prepared=True)


def restarting_embedded(broker: EmbeddedBroker | None, remake: Callable[[], Awaitable[None]],
                        attempt: Callable[[], Awaitable[T]], *, answer_timeout: float,
                        waits: StartWaits) -> Callable[[], Awaitable[T]]:
    """``attempt``, after starting the embedded broker again (and ``remake``
    of its topics: its memory is lost) if it died since the start launched
    it, or is alive but does not answer within ``answer_timeout`` (killed
    first: doers/broker_probe.py). Its supervisor runs only once the daemon
    has started; until then a step would wait for such a broker for ever."""
    async def again() -> T:
        if broker is not None and broker.process is not None:
            # One that outlives SIGKILL raises BrokerUndead: waited for as a
            # broker that does not answer (broker_cause).
            if (pid := await kill_if_wedged(broker, answer_timeout)) is not None:
                log.error("embedded broker (pid %s) was alive but had not answered for %gs "
                          "during the start; killed it to start it again", pid,
                          answer_timeout, extra={"stage": START})
            elif not broker.alive():
                log.error("embedded broker died during the start (exit code %s); starting it "
                          "again on %s", broker.process.returncode, broker.bootstrap,
                          extra={"stage": START})
            if not broker.alive():
                await start_embedded(broker, waits)
                await remake()
        return await attempt()
    return again


def crds_context_for(cfg: Config) -> str:
    """The CRDS context of this daemon's runs, pinned in the environment for
    its workers (one context per run); raises CrdsCacheUnreachable while the
    cache cannot be read, CrdsNotConfigured for what a person must set."""
    unset = not crds_settings()  # then crds's FATAL is about a default cache nobody chose
    try:
        context = cfg.crds_context or resolve_context(quiet=unset)
    except CrdsCacheUnreachable:
        if unset:  # crds looked at its default cache: nobody configured one
            raise CrdsNotConfigured(NOT_CONFIGURED) from None
        raise
    except Exception as exc:
        if infrastructure_cause(exc) != CRDS_LOOKUP:
            raise
        # A crds error about the rules (a context it does not know, a server of
        # another observatory): waiting would not change it.
        raise CrdsNotConfigured(f"CRDS refuses its configuration: {exc}") from None
    if not context:
        raise CrdsNotConfigured(NOT_CONFIGURED)
    os.environ["CRDS_CONTEXT"] = context
    return context
