"""Keeps the broker in sight: restarts the embedded one, watches an external one.

The embedded tansu belongs to the daemon: if it dies (SIGKILL, OOM) it is
started again on the same port, and ``on_restart`` rebuilds what its memory
held (topics, product events, announcements of files without products). If
it is alive but no longer answers (stopped, deadlocked: broker_probe.py), it
is killed, and so started again the same way: waiting would be for ever. An
external broker is only probed (a request of the probe's own to each
bootstrap address), with jittered backoff while it is lost; the state
changes are logged once each (deciders/broker_health.py) and aiokafka's own
error stream is silenced while the broker is known to be lost. The clients
reconnect by themselves. When it answers again, ``on_back`` puts back what
it may have lost with its records (a broker started again empty: another
daemon's embedded one, a Kafka node on a fresh volume); each part of that
checks cheaply first, so a broker back with its records costs a few
requests. A failed ``on_back`` is tried again, at growing intervals, until
it succeeds. A broker started again between two probes fails none: every
``RECORDS_EVERY`` seconds the ends of the catalog's partitions (``records``)
are compared with the last ones seen (deciders/broker_records.py), and one
that lost its records is owed the same ``on_back``; one client is kept for
that check (doers/kafka/partition_ends.py), not one a check.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable

import anyio

from calstream.daemon.deciders.broker_health import BrokerHealth
from calstream.daemon.deciders.broker_records import BrokerRecords
from calstream.daemon.doers.broker_probe import BrokerUndead, answering, kill_if_wedged
from calstream.daemon.doers.embedded_broker import BrokerError, EmbeddedBroker
from calstream.daemon.doers.file_reads import (
    READ_SECONDS,
    WORK_DIR_HUNG,
    FileReads,
    ReadHung,
)
from calstream.daemon.doers.kafka.partition_ends import PartitionEnds
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.failures import error_text

log = logging.getLogger("calstream.broker")

# aiokafka logs every failed connection attempt of every client, several hundred
# lines a second while the broker is down; one line per state change says it all.
CLIENT_LOGGERS = ("aiokafka", "kafka")


_saved_levels: dict[str, int] = {}
# The daemon's loop and the planner's (a start step of its clients) both quiet
# them: a level saved while the other had set CRITICAL would be restored for good.
_saved_levels_lock = threading.Lock()


def quiet_client_logs(quiet: bool, names: tuple[str, ...] = CLIENT_LOGGERS) -> None:
    """Raise the client library's loggers (and, through their effective level,
    all its child loggers) to CRITICAL while the broker is known to be lost
    (or ``names``' while what they would repeat is known)."""
    with _saved_levels_lock:
        for name in names:
            logger = logging.getLogger(name)
            if quiet and name not in _saved_levels:
                _saved_levels[name] = logger.level
                logger.setLevel(logging.CRITICAL)
            elif not quiet and name in _saved_levels:
                logger.setLevel(_saved_levels.pop(name))


# How often the embedded broker is asked a request (its process is polled four
# times a second, which costs nothing): a wedged one is started again within
# this and the answer's time-out.
EMBEDDED_ANSWER_EVERY = 5.0

# How often an external broker's partition ends are asked (one metadata and
# one ListOffsets request, no record read): a broker that lost its records
# between two probes is healed within this and a probe's interval.
RECORDS_EVERY = 5.0


class BrokerSupervisor:
    """``answer_timeout``: how long a probe waits for the broker's answer (the
    clients' own request time-out, ``broker_timeout_seconds``)."""

    def __init__(self, bootstrap: str, metrics: Metrics, *, loss_bound: float,
                 answer_timeout: float, ssl_context: ssl.SSLContext | None = None,
                 embedded: EmbeddedBroker | None = None,
                 on_restart: Callable[[], Awaitable[None]] | None = None,
                 on_back: Callable[[], Awaitable[None]] | None = None,
                 records: PartitionEnds | None = None, read_seconds: float = READ_SECONDS):
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.answer_timeout = answer_timeout
        self.ssl_context = ssl_context
        self.embedded = embedded
        self.on_restart = on_restart
        self.on_back = on_back
        # The catalog's partition ends, asked of an external broker through
        # one kept client, closed when supervising ends.
        self.records = records
        self.broker_records = BrokerRecords()
        self.records_checked = 0  # checks of an external broker's partition ends that answered
        self.records_lost = 0  # losses those checks found (no probe had failed)
        self._back_owed: float | None = None  # when ``on_back`` is next due; None: not owed
        self._back_failures = 0
        self.health = BrokerHealth(loss_bound)
        self.restarts = 0
        # The embedded broker's directory, made at a restart, given read_seconds.
        self._reads = FileReads(1, read_seconds, of="the embedded broker's directory")
        self.wedged = 0  # embedded brokers killed for not answering
        self._undead_pid: int | None = None  # the last one that outlived SIGKILL: said once
        self.last_recovery: float | None = None  # seconds from loss noticed to usable again

    def problem(self, *, for_health: bool = False) -> str | None:
        """Why the daemon is not ready (lost at all) or not healthy (lost beyond the bound)."""
        now = time.monotonic()
        lost = self.health.lost_for(now)
        if lost is None or (for_health and not self.health.unhealthy(now)):
            return None
        return f"broker {self.bootstrap} lost for {lost:.0f}s"

    async def run(self) -> None:
        self.metrics.broker_up.set(1)
        async with anyio.create_task_group() as tg:
            if self.embedded is not None:
                tg.start_soon(self._kill_when_wedged, self.embedded)
            elif self.records is not None and self.on_back is not None:
                tg.start_soon(self._watch_records)
            while True:
                # The embedded broker's liveness is a poll() of its process: cheap, so
                # often (a quick restart also keeps the clients' error stream short).
                await anyio.sleep(self.health.next_probe(0.25 if self.embedded else 1.0))
                if self.embedded is not None:
                    if not self.embedded.alive():
                        await self._restart_embedded()
                    continue
                ok = await answering(self.bootstrap, answer_timeout=self.answer_timeout,
                                     ssl_context=self.ssl_context)
                change = self.health.observe(ok, time.monotonic())
                self._note(change)
                if change == "back" and self.on_back is not None:
                    self._back_owed, self._back_failures = time.monotonic(), 0
                if ok and self._back_owed is not None and time.monotonic() >= self._back_owed:
                    await self._recover_after_loss()

    async def _recover_after_loss(self) -> None:
        """``on_back`` once; failed, owed again after 2, 4, ... up to 60 s
        (logged at the first failure only: a cause that stays, such as no
        right to create topics, must not fill the log once a second)."""
        assert self.on_back is not None
        try:
            await self.on_back()
        except Exception as exc:  # noqa: BLE001 - supervising goes on; tried again later
            self._back_failures += 1
            delay = min(60.0, 2.0 ** self._back_failures)
            self._back_owed = time.monotonic() + delay
            (log.warning if self._back_failures == 1 else log.debug)(
                "broker %s is back; putting back what it may have lost failed (%s): "
                "tried again in %.0fs", self.bootstrap, error_text(exc), delay)
            return
        self._back_owed = None
        self.broker_records.forget()  # what it had before the loss is no measure now

    async def _watch_records(self) -> None:
        """The partition ends, asked while the broker answers and nothing is
        owed (a loss the probe saw has its own path); a check that fails is
        the probe's to judge. Lost records make ``on_back`` owed, as a probe's
        "back" does. Its client is closed when supervising ends."""
        assert self.records is not None
        try:
            await self._check_records()
        finally:
            await self.records.aclose()

    async def _check_records(self) -> None:
        assert self.records is not None
        while True:
            await anyio.sleep(RECORDS_EVERY)
            if self.health.lost_since is not None or self._back_owed is not None:
                continue
            try:
                ends = await self.records()
            except Exception as exc:  # noqa: BLE001 - a broker fault: the probe's to see
                log.debug("asking broker %s for its partition ends failed: %s",
                          self.bootstrap, error_text(exc))
                continue
            if self.health.lost_since is not None or self._back_owed is not None:
                continue  # lost meanwhile: what it answered may be from before
            self.records_checked += 1
            if (why := self.broker_records.observe(ends)) is None:
                continue
            self.records_lost += 1
            self.metrics.broker_records_lost.inc()
            log.error("broker %s lost records without failing a probe (%s): started again "
                      "between two probes? putting back what it may have lost",
                      self.bootstrap, why)
            self._back_owed, self._back_failures = time.monotonic(), 0

    async def _kill_when_wedged(self, embedded: EmbeddedBroker) -> None:
        """The embedded broker alive but not answering is killed, so that
        ``run`` starts it again as after a crash (its clients would otherwise
        time out and park their work for as long as it stays wedged)."""
        while True:
            await anyio.sleep(EMBEDDED_ANSWER_EVERY)
            try:
                pid = await kill_if_wedged(embedded, self.answer_timeout)
            except BrokerUndead as exc:
                self._undead(exc)
                continue
            if pid is not None:
                log.error("embedded broker (pid %s) was alive but had not answered for %gs; "
                          "killed it to start it again", pid, self.answer_timeout)
                self.wedged += 1

    def _undead(self, exc: BrokerUndead) -> None:
        """A wedged broker that outlives SIGKILL is lost until it exits (then
        ``run`` starts it again as after a crash): not ready, ``broker_up`` 0,
        not healthy past the bound (an orchestrator's restart may help). Said
        once a process; it is killed again at each of its probes meanwhile."""
        if self._undead_pid != exc.pid:
            self._undead_pid = exc.pid
            log.error("%s; the broker is lost until then (killed again at each probe)", exc)
        self._note(self.health.observe(False, time.monotonic()))

    def _note(self, change: str | None) -> None:
        lost = self.health.lost_for(time.monotonic())
        if change == "lost":
            self.broker_records.forget()
            log.error("broker %s lost: not answering; retrying with backoff (not ready; "
                      "not healthy after %gs)", self.bootstrap, self.health.loss_bound)
            quiet_client_logs(True)
            self.metrics.broker_up.set(0)
        elif change == "still_lost":
            log.error("broker %s still lost after %.0fs: /healthz now fails", self.bootstrap, lost)
        elif change == "back":
            quiet_client_logs(False)
            self.metrics.broker_up.set(1)
            log.warning("broker %s is back", self.bootstrap)

    async def _restart_embedded(self) -> None:
        assert self.embedded is not None
        noticed = time.monotonic()
        code = self.embedded.process.returncode if self.embedded.process else None
        self._note(self.health.observe(False, noticed))
        log.error("embedded broker died (exit code %s); starting it again on %s (its memory is "
                  "lost: topics, product events and announcements are rebuilt)", code,
                  self.embedded.bootstrap)
        try:
            self.embedded.stop()
            # Its directory in a thread, timed: on the event loop's thread a
            # silent work directory froze the whole daemon there.
            await self._reads.timed(lambda _: self.embedded.prepared(), self.embedded.work_dir,
                                    self._reads.read_seconds, what="making",
                                    cause=WORK_DIR_HUNG)
            # On the event loop's thread, blocking it for the broker's start-up
            # (tens of ms): the kernel kills tansu when the thread that started
            # it exits (PDEATHSIG), and anyio's worker threads do exit.
            self.embedded.start(prepared=True)
        except (BrokerError, OSError, ReadHung) as exc:
            log.error("embedded broker did not start again: %s; retrying", exc)
            return
        self.restarts += 1
        self.metrics.broker_restarts.inc()
        if self.on_restart is not None:
            # Nothing may run on the new broker before its topics exist; a failure
            # here (the broker died again) is retried on the next turn.
            try:
                await self.on_restart()
            except Exception:  # noqa: BLE001 - keep supervising whatever went wrong
                log.exception("rebuilding the embedded broker's state failed; retrying")
                self.embedded.stop()
                return
        self.last_recovery = time.monotonic() - noticed
        self._note(self.health.observe(True, time.monotonic()))
        log.warning("embedded broker restarted and rebuilt in %.1fs", self.last_recovery)
