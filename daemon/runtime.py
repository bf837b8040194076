"""The daemon: broker lifecycle, topics, roles, metrics endpoint, shutdown."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio

import calstream
from calstream.daemon.doers import kafka, planner_clients, work_dir_lock
from calstream.daemon.doers.broker_recovery import after_broker_back, recover_lost_records
from calstream.daemon.doers.broker_supervisor import BrokerSupervisor
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.file_reads import ReadHung
from calstream.daemon.doers.inbox import Watcher
from calstream.daemon.doers.kafka import Publisher
from calstream.daemon.doers.parking import in_thread
from calstream.daemon.doers.planner_leadership import Leadership
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.doers.planner_thread import OwnLoop, stale_for
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.promotion import ensure_current
from calstream.daemon.doers.start_waits import (
    StartWaits,
    broker_or_disk_cause,
    crds_cause,
    crds_context_for,
    hung_or_disk_cause,
    restarting_embedded,
    settings_checked,
    start_embedded,
    started,
)
from calstream.daemon.doers.work_item_runs import Solitude, solitude
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations import deployment, logs
from calstream.daemon.operations.config import Config, ConfigError, host_port
from calstream.daemon.operations.console import Console
from calstream.daemon.operations.metrics import Metrics
from calstream.daemon.operations.ops_http import OpsServer
from calstream.daemon.roles import RoleTasks
from calstream.daemon.stages import STAGES
from calstream.steps.failures import infrastructure_cause
from calstream.steps.provenance import jwst_version
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.daemon")
T = TypeVar("T")


class Daemon(RoleTasks):
    def __init__(self, cfg: Config, lock: work_dir_lock.WorkDirLock | None = None):
        self.cfg = cfg
        self.lock = lock  # the work directory's (doers/work_dir_lock.py), if taken or to take
        self.topics = Topics(cfg.topic_prefix)
        self.metrics = Metrics()
        self.store = ProductStore(cfg.products, moved_from=cfg.products_moved_from)
        self.broker: EmbeddedBroker | None = None
        self.ops: OpsServer | None = None
        self.consumers: list[kafka.ConcurrentConsumer] = []
        self.pools: dict[str, WorkerPool] = {}
        self.watcher: Watcher | None = None
        self.planner: Planner | None = None
        self.leadership: Leadership | None = None
        self.planner_loop: OwnLoop | None = None
        self.crds_context: str | None = None
        self.bootstrap: str | None = cfg.kafka_bootstrap
        self.supervisor: BrokerSupervisor | None = None
        self.start_waits = StartWaits(cfg, self.metrics)
        # This daemon's runs in workers (work_item_runs.Solitude), its loop's:
        # /readyz names the suspects that hold its stages back.
        self.solitude: Solitude | None = None
        # Written by the event loop, read by /healthz; None until the beat starts
        # (start-up may legitimately spend long in threads, e.g. resolving CRDS).
        self.heartbeat: float | None = None

    # -- start-up pieces that must run on the main thread ----------------
    def start_broker(self) -> str:
        """The embedded broker's address, unless one is configured. Only its
        port is chosen (and held: EmbeddedBroker.reserve_port) here, so that it
        is known (and recorded) at once; run() starts it as a start step, which
        waits out a work directory it cannot write, on the event loop's thread:
        the broker dies with the thread that started it (PDEATHSIG)."""
        if self.cfg.kafka_bootstrap:
            return self.cfg.kafka_bootstrap
        self.broker = EmbeddedBroker(self.cfg.work_dir, storage=self.cfg.broker_storage)
        self.broker.reserve_port()
        self.bootstrap = self.broker.bootstrap
        # Nobody else can make an embedded broker's topics: its daemon makes them
        # at start and after the broker was restarted empty (after_broker_back).
        self.cfg = dataclasses.replace(self.cfg, kafka_bootstrap=self.bootstrap,
                                       create_topics=True)
        return self.bootstrap

    def _restarting(self, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """A start step's ``attempt``, the embedded broker restarted first if dead or wedged."""
        return restarting_embedded(self.broker, partial(kafka.create_topics, self.cfg,
                                                        self.topics), attempt,
                                   answer_timeout=self.cfg.broker_timeout_seconds,
                                   waits=self.start_waits)

    def readiness(self) -> tuple[bool, list[str]]:
        problems = []
        # While it starts, the start's own line says what the broker waits for.
        if self.broker is not None and self.start_waits.done and not self.broker.alive():
            problems.append("embedded broker is not running")
        elif self.supervisor is not None and (lost := self.supervisor.problem()):
            problems.append(lost)
        problems += filter(None, (c.stalled(self.cfg.stall_seconds) for c in self.consumers))
        problems += self.start_waits.problems()  # what it waits for, if anything
        if behind := planner_clients.catching_up(self.planner, self.start_waits):
            problems.append(behind)
        # Why a stage stalls after a crash that left suspects: named, not a
        # reason of its own (a suspect's run alone is progress).
        if problems and self.solitude is not None and (alone := self.solitude.said()):
            problems.append(alone)
        return not problems, problems

    def health(self) -> tuple[bool, list[str]]:
        """Alive: the event loop beats, and the broker is not lost beyond
        broker_loss_seconds (then an orchestrator's restart may help)."""
        problems = []
        stale = time.monotonic() - (self.heartbeat or time.monotonic())
        if stale > self.cfg.heartbeat_seconds:
            problems.append(f"event loop has not run for {stale:.0f}s")
        if (stale := stale_for(self.planner_loop)) > self.cfg.heartbeat_seconds:
            problems.append(f"the planner's event loop has not run for {stale:.0f}s")
        if self.supervisor is not None and (lost := self.supervisor.problem(for_health=True)):
            problems.append(lost)
        return not problems, problems

    async def beat(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            self.metrics.loop_heartbeat.set(time.time())
            logs.flush_floods()  # a flood that stopped still gets its summary line
            await anyio.sleep(1.0)

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        if not cfg.kafka_bootstrap:
            raise RuntimeError("start_broker() must run before run() (on the main thread)")
        host, port = host_port(cfg.metrics_address)
        self.metrics.stall_threshold.set(cfg.stall_seconds)
        self.solitude = solitude()
        try:
            self.ops = OpsServer(host, port, self.metrics, self.readiness,
                                 planner=self._planner_view,
                                 pages=Console(cfg, lambda: [self.ops.address]).handle,
                                 health=self.health)
        except OSError as exc:  # most often another daemon on the same host and port
            raise ConfigError(
                f"metrics_address {cfg.metrics_address}: the operations endpoint cannot listen "
                f"there ({exc.strerror or exc}); give each daemon on a host its own "
                "(--metrics-address, CALSTREAM_METRICS_ADDRESS)") from None
        self.ops.start()
        log.info("broker: %s%s", cfg.kafka_bootstrap, " (embedded tansu)" if self.broker else "")
        log.info("metrics: http://%s/metrics (also /healthz, /readyz)", self.ops.address)
        # Recorded before anything is waited for (`calstream status --work-dir` finds a daemon
        # that waits); a work dir that refuses it (or the lock) now is waited for below.
        with contextlib.suppress(OSError, ReadHung):  # timed: a silent work dir froze the loop
            if self.lock is None or self.lock.held:
                await self.start_waits.on_work_dir(partial(
                    deployment.record, cfg, self.ops.address, embedded=self.broker is not None))
        # Each start step waits out the broker, disk or CRDS it needs (start_waits.py).
        step, broker, disks = self.start_waits.step, f"the broker {cfg.kafka_bootstrap}", \
            f"the work directory {cfg.work_dir} and product store {cfg.products}"
        try:  # CRDS first: its configuration errors stop the start before any wait
            if {st.name for st in STAGES} & set(cfg.roles):
                self.crds_context = await step("CRDS", partial(  # abandoned by a SIGTERM
                    anyio.to_thread.run_sync, crds_context_for, cfg, abandon_on_cancel=True),
                    crds_cause)
            else:
                self.crds_context = os.environ.get("CRDS_CONTEXT", "n/a")
            self.metrics.build_info.labels(calstream.__version__, jwst_version(),
                                           self.crds_context).set(1)
            await step(disks, partial(self.start_waits.roots_made, self.lock, partial(
                deployment.record, cfg, self.ops.address, embedded=self.broker is not None)),
                hung_or_disk_cause)
            await step(f"the inbox {cfg.inbox} and quarantine {cfg.quarantine}",
                       self.start_waits.inbox_made, hung_or_disk_cause)
            if self.broker is not None:
                await step(f"the embedded broker (its directory {self.broker.work_dir})",
                           partial(start_embedded, self.broker, self.start_waits),
                           hung_or_disk_cause)
            # The first step to meet the broker: TLS and SASL mistakes stop the start here.
            await step(broker, self._restarting(partial(settings_checked, cfg, partial(
                kafka.create_topics, cfg, self.topics, create=cfg.create_topics))),
                broker_or_disk_cause)
            await step(disks, in_thread(partial(ensure_current, self.store)), infrastructure_cause)
            removed = await step(disks, in_thread(self.store.clean_scratch), infrastructure_cause)
            if removed:
                log.info("removed %d scratch directories left by an earlier crash", removed)
            producer = await step(broker, self._restarting(partial(started, partial(
                kafka.producer, cfg))), broker_or_disk_cause)
            try:
                publisher = Publisher(producer, self.topics, self.metrics,
                                      role="+".join(cfg.roles), work_dir=cfg.work_dir)
                await step(f"{broker} to take the product events and dead letters again",
                           self._restarting(partial(recover_lost_records, cfg, self.topics,
                                                   self.store, publisher,
                                                   reads=self.start_waits.reads)),
                           broker_or_disk_cause)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.beat)
                    self.supervisor = BrokerSupervisor(
                        cfg.kafka_bootstrap, self.metrics, loss_bound=cfg.broker_loss_seconds,
                        answer_timeout=cfg.broker_timeout_seconds,
                        ssl_context=kafka.client_options(cfg).get("ssl_context"),
                        embedded=self.broker, on_restart=lambda: self._rebuild_broker(publisher),
                        on_back=lambda: self._broker_back(publisher),
                        records=kafka.PartitionEnds(cfg, self.topics))
                    tg.start_soon(self.supervisor.run)
                    for st in STAGES:
                        if st.name in cfg.roles:
                            await tg.start(self._run_stage, publisher, st)
                    if "watcher" in cfg.roles:
                        await tg.start(self._run_watcher, publisher)
                    if "planner" in cfg.roles:
                        await tg.start(self._run_planner, publisher)
                    log.info("calstream %s running roles %s; inbox %s; products %s",
                             calstream.__version__, ", ".join(cfg.roles), cfg.inbox, cfg.products)
                    self.start_waits.done = True
                    task_status.started(self)
            finally:
                with anyio.CancelScope(shield=True):
                    await producer.stop()
        finally:
            # Timed: on the event loop's thread a silent work directory held
            # the stop (and the lock) for ever; left, the record is stale.
            with anyio.CancelScope(shield=True), contextlib.suppress(OSError, ReadHung):
                await self.start_waits.on_work_dir(partial(deployment.remove, cfg,
                                                           self.ops.address))
            self.ops.stop()

    async def _rebuild_broker(self, publisher: Publisher) -> None:
        """After the embedded broker restarted empty: what an external one back gets,
        then the plans and holds and the announcements of files still without products."""
        await after_broker_back(self.cfg, self.topics, self.store, publisher,
                                emptied=self.broker is not None and self.broker.forgets,
                                reads=self.start_waits.reads)
        self._planner_records_lost()
        if self.watcher is not None:
            await self.watcher.reannounce()

    async def _broker_back(self, publisher: Publisher) -> None:
        """An external broker answering again after a loss (it may have come back empty)."""
        await after_broker_back(self.cfg, self.topics, self.store, publisher,
                                reads=self.start_waits.reads)
        self._planner_records_lost()

    def _planner_records_lost(self) -> None:
        """The plans and holds are put back by the planner that acts, once it
        acts (planner_disk_records.republish_when_owed): not here, by role.
        Before, they were sent only if the planner was active at this moment;
        one paused or taking over (the restart drops the lease's group too)
        sent nothing, and nobody did later."""
        if self.leadership is not None:
            self.leadership.gate.records_lost()

    def stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.stop()

    def describe(self) -> dict[str, Any]:
        return {"broker": self.bootstrap, "embedded": self.broker is not None,
                "metrics": self.ops.address if self.ops else None,
                "crds_context": self.crds_context}
