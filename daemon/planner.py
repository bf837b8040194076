"""The planner (a decider): product events in; work orders, holds and dead letters out.

On start it rebuilds its state from the topics (the work orders already sent,
the holds, then every product event from the beginning), and only once it has
caught up does it let time-outs fire: a companion that is simply further along
the topic must not be declared missing. It never touches pixels and never
imports jwst's pipelines.
"""

from __future__ import annotations

import logging
import time

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition

from calstream.topics import contract
from calstream.topics.catalog import Topics

from . import kafka
from .bus import Bus
from .config import Config
from .metrics import Metrics
from .planner_state import Emit, PlannerState

log = logging.getLogger("calstream.planner")


class Planner:
    def __init__(self, cfg: Config, *, bus: Bus, metrics: Metrics, topics: Topics):
        self.cfg = cfg
        self.bus = bus
        self.metrics = metrics
        self.topics = topics
        self.state = PlannerState(companion_wait=cfg.companion_wait)
        self.caught_up = False
        self._deferred: list = []
        self.last_progress = time.monotonic()

    async def restore(self) -> None:
        for record in await kafka.read_to_end(self.cfg, self.topics.name("work.stage2")):
            try:
                self.state.restore_order(contract.decode(record.value, expected="work_order"))
            except contract.InvalidMessage:
                continue  # the stage-2 consumer dead-letters these
        for record in await kafka.read_to_end(self.cfg, self.topics.name("holds")):
            if record.value is None:
                continue
            try:
                self.state.restore_hold(contract.decode(record.value, expected="hold"))
            except contract.InvalidMessage:
                continue
        log.info("planner restored %d work order(s) and %d hold record(s)",
                 len(self.state.ordered), len(self.state.holds))

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        await self.restore()
        # One planner sees every partition of products (keyed by program):
        # no group, no commits; the topics are its memory.
        consumer = AIOKafkaConsumer(**kafka.client_options(self.cfg), group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()
            tps = [TopicPartition(name, p)
                   for name in (self.topics.name("products"), self.topics.name("pointing"))
                   for p in sorted(consumer.partitions_for_topic(name) or ())]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            targets: dict[TopicPartition, int] | None = None
            task_status.started()
            last_tick = 0.0
            while True:
                batch = await consumer.getmany(*tps, timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        await self._on_record(record)
                if not self.caught_up:
                    if targets is None and all(consumer.highwater(tp) is not None for tp in tps):
                        targets = {tp: consumer.highwater(tp) for tp in tps}
                    positions = {tp: await consumer.position(tp) for tp in tps}
                    if targets is not None and all(positions[tp] >= targets[tp] for tp in tps):
                        self.caught_up = True
                        log.info("planner caught up with the product events")
                        for record in self._deferred:
                            await self._on_record(record)
                        self._deferred.clear()
                if self.caught_up and time.monotonic() - last_tick >= 1.0:
                    last_tick = time.monotonic()
                    await self._publish(self.state.tick(time.time()))
                    self._update_metrics()
        finally:
            with anyio.CancelScope(shield=True):
                await consumer.stop()

    async def _on_record(self, record) -> None:
        if record.topic == self.topics.name("pointing"):
            # An update may precede its exposure's product event in the rebuild.
            if not self.caught_up:
                self._deferred.append(record)
                return
            await self._on_pointing(record)
            return
        try:
            event = contract.decode(record.value, expected="product")
        except contract.InvalidMessage:
            return  # not the planner's to judge: product events are validated at the source
        emits = self.state.observe(event, time.time())
        for e in emits:
            if e.topic == "holds" and e.message["state"] == "released":
                self.metrics.hold_releases.labels(path=e.message["release"]["path"]).inc()
        await self._publish(emits)
        self.last_progress = time.monotonic()

    async def _on_pointing(self, record) -> None:
        key = record.key.decode("utf-8", "replace") if record.key else ""
        try:
            update = contract.decode(record.value, expected="pointing_update")
        except contract.InvalidMessage as exc:
            await self.bus.dead_letter(category="rejected_update", stage="planner", key=key,
                                       record=record, reason=f"pointing update rejected: {exc}")
            return
        emits = self.state.observe_pointing(update, time.time())
        for e in emits:
            if e.topic == "holds" and e.message["state"] == "released":
                self.metrics.hold_releases.labels(path=e.message["release"]["path"]).inc()
        await self._publish(emits)

    async def _publish(self, emits: list[Emit]) -> None:
        for e in emits:
            await self.bus.publish(e.topic, e.key, e.message)
            if e.topic == "work.stage2":
                self.metrics.work_orders.labels(stage="stage2",
                                                degraded=str(bool(e.message["degraded"])).lower()
                                                ).inc()
                log.info("%s: stage-2 work order (%s%s)", e.key, e.message["pipeline"],
                         f", degraded: {e.message['degraded']}" if e.message["degraded"] else "",
                         extra={"exposure_id": e.key, "stage": "planner"})
            elif e.topic == "holds":
                release = e.message.get("release")
                log.warning("%s: %s (%s)", e.key, e.message["state"],
                            f"by {release['path']}: {release['reason']}" if release
                            else e.message["reason"],
                            extra={"exposure_id": e.key, "stage": "planner"})
            elif e.topic == "deadletter":
                self.metrics.dead_letters.labels(stage="planner",
                                                 category=e.message["category"]).inc()

    def _update_metrics(self) -> None:
        s = self.state.summary(time.time())
        self.metrics.associations_open.labels(stage="stage2").set(s["waiting"])
        self.metrics.held_exposures.set(s["held"])
        self.metrics.oldest_hold_age.set(s["oldest_hold_age"])
