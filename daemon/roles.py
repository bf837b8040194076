"""Each role's task, as the daemon runs it: a stage's warm pool and consumer,
the planner on its own loop under its lease, the watcher on the inbox.

Kept apart from ``runtime`` (the daemon's start: broker, topics, the
operations endpoint, the start steps that wait out the broker, disk and
CRDS, and shutdown), which starts each role's task once its start steps
are done. ``RoleTasks`` is a mixin of ``runtime.Daemon``, whose
configuration, metrics, store and start waits it uses.
"""

from __future__ import annotations

import logging
import os
from functools import partial

import anyio

from calstream.daemon.deciders.pool_warming import warms_at_start
from calstream.daemon.doers import kafka, planner_clients, planner_compaction, planner_rebuilds
from calstream.daemon.doers.inbox import Arrival, Rejection, Watcher
from calstream.daemon.doers.kafka import Publisher
from calstream.daemon.doers.kafka.concurrent_consumer import fault_cause
from calstream.daemon.doers.parking import Parking
from calstream.daemon.doers.planner_leadership import GatedPublisher, Leadership, PublishGate
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.doers.planner_standby import Standby
from calstream.daemon.doers.planner_thread import OwnLoop
from calstream.daemon.doers.process_memory import memory_to_share_bytes
from calstream.daemon.doers.record_admitter import RecordAdmitter
from calstream.daemon.doers.start_waits import broker_cause, started
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations import logs
from calstream.daemon.stages import Stage, arrival_product_stages, daemon_workers, stage_config
from calstream.steps.naming import parse_exposure_name
from calstream.steps.worker_memory import run_memory_bound_bytes
from calstream.topics import contract

log = logging.getLogger("calstream.daemon")


# Environment the calibration workers need; crds reads it at import.
_WORKER_ENV = ("CRDS_PATH", "CRDS_CONTEXT", "CRDS_SERVER_URL", "CRDS_MODE",
               "STPIPE_DISABLE_CRDS_STEPPARS", "OMP_NUM_THREADS", "CALSTREAM_WORKER_LOG_LEVEL")


class RoleTasks:
    def _stage_pool(self, cfg, st: Stage) -> WorkerPool:
        """The stage's pool of workers, as its settings (``cfg``: the stage's) say."""
        env = {**{k: os.environ[k] for k in _WORKER_ENV if k in os.environ},
               **logs.worker_env(cfg.json_logs)}
        return WorkerPool(cfg.workers, stage=st.name, metrics=self.metrics, env=env,
                          initializer=st.initializer,
                          classifier="calstream.steps.reference_integrity:classify_run_failure",
                          max_tasks_per_worker=cfg.max_tasks_per_worker,
                          rss_limit_bytes=cfg.worker_rss_limit_mb << 20,
                          run_memory_bytes=run_memory_bound_bytes(
                              cfg.worker_run_memory_mb, workers=daemon_workers(self.cfg),
                              memory=memory_to_share_bytes()),
                          prefetch=st.prefetch,
                          idle_return_seconds=cfg.worker_idle_return_seconds, faults=cfg,
                          server_hung_seconds=cfg.worker_server_hung_seconds,
                          stopped_seconds=cfg.worker_stopped_seconds)

    async def _run_stage(self, publisher: Publisher, st: Stage, *,
                         task_status=anyio.TASK_STATUS_IGNORED) -> None:
        """A pool of warm workers fed by the stage's consumer group on its live
        topic, and on its replay topic at low priority (live beats replay: see
        kafka/concurrent_consumer.py)."""
        cfg = stage_config(st, self.cfg)
        # Started before the pool: a start that waits for its broker has no workers to
        # stop. Subscribed by the loop itself, with its rebalance listener: subscribing
        # twice changes the assignment under aiokafka's running fetcher.
        consumer = await self.start_waits.step(
            f"the broker {cfg.kafka_bootstrap}",
            partial(started, partial(kafka.group_consumer, cfg, st.group(cfg.group_prefix),
                                     st.fetch_wait_ms)),
            broker_cause)
        pool = self._stage_pool(cfg, st)
        # Closed and the consumer stopped on every way out, a stop during the
        # first pool's start (the server's jwst import) among them.
        try:
            lazily = not warms_at_start(cfg.warm_workers, st.name)
            pool.start()
            if not lazily:
                await pool.fill()  # the server's jwst import (the first pool's), off the loop
            if lazily:
                log.info("%s: workers start with the first item (warm_workers)", st.name)
            self.pools[st.name] = pool
            runner = WorkItemRunner(cfg, publisher, self.store, pool, self.metrics, self.crds_context)
            loop = kafka.ConcurrentConsumer(
                consumer, stage=st.name, handler=RecordAdmitter(cfg, runner, st).handle,
                capacity=pool.capacity, metrics=self.metrics, topics=[self.topics.name(st.live_topic)],
                low_priority=[self.topics.name(st.replay_topic)],
                stall_seconds=cfg.stall_seconds, max_aside=cfg.max_parked_aside)
            self.consumers.append(loop)
            async with anyio.create_task_group() as background:
                runner.background = background  # previews, after their products
                background.start_soon(runner.previews.keep_up, background)  # and a stop's
                await loop.run(task_status=task_status)
        finally:
            with anyio.CancelScope(shield=True):
                await consumer.stop()
                await anyio.to_thread.run_sync(pool.close)

    async def _run_planner(self, publisher: Publisher, *,
                           task_status=anyio.TASK_STATUS_IGNORED) -> None:
        """The lease on this loop, the planner on its own (doers/planner_thread.py):
        its decisions never hold up the watcher or the stage consumers."""
        gate = PublishGate()
        self.leadership = Leadership(self.cfg, self.topics, self.metrics, gate, self.start_waits)
        standby = Standby(gate, self.topics, follow=self.cfg.planner_lease)
        compacted_at = {"in_use": 0, "pending": False}  # the last compaction

        async def planner_once(task_status) -> None:
            # The new planner replaces the old one at once (never None: /readyz
            # says "catching up" throughout), which frees the old state.
            self.planner = planner = Planner(self.cfg, publisher=None, metrics=self.metrics,
                                             topics=self.topics)
            planner.standby, planner.start_waits = standby, self.start_waits
            planner.in_use_at_last_compaction = compacted_at["in_use"]
            if compacted_at["pending"]:
                compacted_at["pending"] = False
                planner_compaction.drop_frozen_state()
            # Its own (aiokafka clients belong to one loop), once the broker answers.
            producer = await planner_clients.started_producer(self.cfg, self.start_waits)
            try:
                own = publisher.with_producer(producer)
                planner.publisher = GatedPublisher(own, gate, standby.withhold, self.cfg)
                await planner.run(task_status=task_status)
            finally:
                with anyio.CancelScope(shield=True):
                    await producer.stop()

        def unreadable() -> None:  # /readyz: not ready until the new planner caught up
            self.metrics.planner_rebuilds.inc()
            if self.planner is not None:
                self.planner.caught_up = False

        def compacted(c: planner_compaction.Compaction) -> None:
            self.metrics.planner_compactions.labels(leadership=c.role).inc()
            compacted_at.update(in_use=c.in_use, pending=True)
            if self.planner is not None:
                self.planner.caught_up = False

        async def planner_main(*, task_status=anyio.TASK_STATUS_IGNORED) -> None:
            await planner_rebuilds.rebuilding_when_unreadable(
                planner_once, self.cfg.work_dir, unreadable, compacted, task_status=task_status)

        async with anyio.create_task_group() as tg:
            await tg.start(self.leadership.run)
            self.planner_loop = OwnLoop("planner")
            await tg.start(self.planner_loop.run, planner_main)
            task_status.started()

    def _planner_view(self) -> dict | None:
        """/planner: built by the planner's loop, served from the HTTP thread."""
        if "planner" not in self.cfg.roles:
            return None
        view = dict((self.planner and self.planner.last_view) or {"caught_up": False})
        if self.planner is not None:  # measured while it catches up too
            view["behind"] = dict(self.planner.behind)
        if self.leadership is not None:
            view["leadership"] = self.leadership.describe()
            if self.planner is not None and self.planner.standby is not None:
                view["leadership"].update(self.planner.standby.describe())
        return view

    async def _run_watcher(self, publisher: Publisher, *,
                           task_status=anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg

        async def on_arrival(a: Arrival) -> None:
            message = contract.build(
                "arrival", contract.event_id("arrival", a.exposure_id, a.digest),
                exposure_id=a.exposure_id, path=str(a.path), digest=a.digest, size=a.size,
                detected_at=contract.iso(a.detected_at), source=a.source, priority="live",
                header=a.header)
            await publisher.publish("raw", a.exposure_id, message)
            self.metrics.arrivals.labels(source=a.source).inc()

        async def on_reject(r: Rejection) -> None:
            await publisher.dead_letter(
                category="bad_file", reason=r.reason, stage="watcher",
                key=r.exposure_id or r.path.name, exposure_id=r.exposure_id, path=str(r.path),
                quarantined_to=str(r.quarantined_to) if r.quarantined_to else None,
                digest=r.digest)

        def has_products(exposure_id: str, digest: str) -> bool:
            """Dealt with: calibrated, or dead-lettered (not announced again at
            every start; a redrive re-sends the arrival itself)."""
            name = parse_exposure_name(exposure_id)
            return any(check(name.program, name.observation, exposure_id, stage, digest)
                       for stage in arrival_product_stages()  # detector1, dark, guider
                       for check in (self.store.has_input, self.store.has_failed))

        self.watcher = Watcher(
            cfg.inbox, cfg.quarantine, cfg.work_dir / "watcher-ledger.sqlite3",
            on_arrival=on_arrival, on_reject=on_reject, has_products=has_products,
            polling=cfg.polling, poll_interval=cfg.poll_interval, roots=cfg.allowed_roots,
            settle_seconds=cfg.settle_seconds, incomplete_timeout=cfg.incomplete_timeout,
            parking=lambda what, root=None: Parking(cfg, self.metrics, stage="watcher",
                                                    what=what, root=root),
            fault_of=fault_cause)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_pending)
            await tg.start(self.watcher.run)
            task_status.started()

    async def _watch_pending(self) -> None:
        while True:
            if self.watcher is not None:
                self.metrics.watcher_pending.set(self.watcher.stats().pending)
            await anyio.sleep(1.0)
