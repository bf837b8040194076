"""A consumer-group member that runs its records concurrently and commits in order.

Every stage consumes through it (roles.py wires one per stage role). It
never runs calibration itself: each record is handed to a task, the loop
keeps polling (so the group never evicts it during a long run), partitions are
paused while ``capacity`` items are in flight, and a partition's offset is
committed only up to its lowest record not yet finished. A handler finishes a
record by publishing its product event or its dead letter; only then may the
offset move past it. A record parked on an infrastructure fault may step
aside (doers/consumer_slots.py): it leaves the count and the stall check, so
the next records are taken in its place, while its offset still holds the
commit back (up to ``max_aside`` of them).

Live beats replay: records of the ``low_priority`` topics (``replay``,
``work.stage2.replay``, ...) are pulled explicitly, only while the live topics
have no backlog and fewer than ``capacity`` items are in flight, and at most
one per free slot. The live topics are never paused for replayed work, so a
live record is taken as soon as it arrives and, in the worker pool, goes ahead
of every replayed item still waiting (see WorkerPool.run's priority): it waits
at most for the runs already in progress.

A record refetched after a rebalance while its first run is still going is
handed to the handler again; the runner tracks runs by work id, so it waits
for that run and finds it done (doers/work_item_runner.py). Stalls are judged
from the start of the oldest item in flight, so a long first run after an
idle period is not taken for a stall; an item's start is when it was taken,
then when a worker began its run (its wait for a worker is no stall:
doers/consumer_slots.py).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable

import anyio
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from calstream.daemon.deciders.retry_policy import HANDLER_BACKOFF, jittered
from calstream.daemon.doers import consumer_slots
from calstream.daemon.doers.kafka.publisher import broker_fault
from calstream.daemon.doers.parking import Parked
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.failures import infrastructure_cause

log = logging.getLogger("calstream.consumer")

Handler = Callable[[ConsumerRecord], Awaitable[None]]


class PartitionOffsets:
    """Offsets of one partition: what is in flight and what may be committed."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.next_offset: int | None = None  # one past the highest record taken
        self.committed: int | None = None

    def take(self, offset: int) -> None:
        self.pending.add(offset)
        self.next_offset = max(self.next_offset or 0, offset + 1)

    def commit_position(self) -> int | None:
        if self.next_offset is None:
            return None
        return min(self.pending) if self.pending else self.next_offset


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: ConcurrentConsumer):
        self.loop = loop

    async def on_partitions_revoked(self, revoked) -> None:
        # Commit what is finished before another member takes these partitions;
        # records still in flight here will be redelivered there and found done.
        await self.loop.commit(only=set(revoked))
        for tp in revoked:
            self.loop.partitions.pop(tp, None)

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("%s: assigned %s", self.loop.stage,
                 ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "nothing")


def poll_silence_limit(stall_seconds: float) -> float:
    """How long a consumer's poll loop may be silent before /readyz says it
    stalled: a quarter of the stall limit, within 30 s and 225 s. The loop
    polls every fetch wait (0.1-0.5 s) and between runs, so minutes of
    silence are a wedge, whatever a run may take (the alert, deploy/
    prometheus/alerts.yml, clamps the same)."""
    return min(max(30.0, stall_seconds / 4), 225.0)


class ConcurrentConsumer:
    def __init__(self, consumer: AIOKafkaConsumer, *, stage: str, handler: Handler,
                 capacity: int, metrics: Metrics, topics: list[str],
                 low_priority: list[str] | None = None, commit_interval: float = 0.5,
                 stall_seconds: float | None = None, max_aside: int = 0):
        self.consumer = consumer
        self.stage = stage
        self.handler = handler
        self.capacity = capacity
        self.metrics = metrics
        self.low_priority = list(low_priority or [])
        self.topics = list(topics) + [t for t in self.low_priority if t not in topics]
        self.commit_interval = commit_interval
        self.partitions: dict[TopicPartition, PartitionOffsets] = {}
        self.in_flight = 0
        self.live_in_flight = 0
        # Parked records stepped aside (doers/consumer_slots.py): out of the
        # count and the stall check, their offsets still pending; at most max_aside.
        self.aside = 0
        self.max_aside = max_aside
        self.finished = 0
        self.last_finished = time.monotonic()
        self.last_poll = time.monotonic()
        # This stage's own stall limit (stage 3 runs for hours); None: the caller's.
        self.stall_seconds = stall_seconds
        # When each item in flight was taken, by a serial number (a record refetched
        # after a rebalance may be in flight twice under the same offset).
        self.started_at: dict[int, float] = {}
        self._serial = 0
        self._dirty = False

    # -- readiness -------------------------------------------------------
    def oldest_in_flight(self) -> float | None:
        """When the oldest item still in flight was taken (monotonic), or None."""
        return min(self.started_at.values(), default=None)

    def stalled(self, stall_seconds: float) -> str | None:
        """Why this consumer is not making progress, or None. An item is
        stalled when it has been in flight for longer than the limit, measured
        from its own start, not from the last item finished (which may be an
        idle period ago)."""
        limit = self.stall_seconds or stall_seconds
        now = time.monotonic()
        if now - self.last_poll > poll_silence_limit(stall_seconds):
            return f"{self.stage}: poll loop has not run for {now - self.last_poll:.0f}s"
        oldest = self.oldest_in_flight()
        if oldest is not None and now - oldest > limit:
            return (f"{self.stage}: {self.in_flight} item(s) in flight and none finished "
                    f"in time: the oldest for {now - oldest:.0f}s (limit {limit:.0f}s)")
        return None

    def _export_oldest(self) -> None:
        # Idle: "now", so the age the alert computes is 0 (it also requires in_flight > 0).
        oldest = self.oldest_in_flight()
        age = 0.0 if oldest is None else time.monotonic() - oldest
        self.metrics.oldest_in_flight_start.labels(stage=self.stage).set(time.time() - age)

    # -- the loop --------------------------------------------------------
    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        # Without a start value, an item that hangs before the first one
        # finishes would leave no timestamp for the stall alert to judge.
        self.metrics.last_progress.labels(stage=self.stage).set(time.time())
        if self.stall_seconds:
            self.metrics.stage_stall_threshold.labels(stage=self.stage).set(self.stall_seconds)
        last_commit = time.monotonic()
        started = False
        async with anyio.create_task_group() as tg:
            try:
                while True:
                    self.last_poll = time.monotonic()
                    self.metrics.last_poll.labels(stage=self.stage).set(time.time())
                    self._export_oldest()
                    live, low = self._split(self.consumer.assignment())
                    if live:
                        batch = await self.consumer.getmany(*live, timeout_ms=200)
                    else:
                        batch = await self._poll_without_live(low)
                    if not started:
                        task_status.started()
                        started = True
                    self._start(tg, batch)
                    free = self.capacity - self.in_flight
                    if low and free > 0 and await self._live_caught_up(live):
                        # Without live partitions this is the loop's poll, so it may wait;
                        # otherwise the fetcher has prefetched them, or will by the next turn.
                        self._start(tg, await self.consumer.getmany(
                            *low, timeout_ms=0 if live else 200, max_records=free))
                    self._apply_backpressure()
                    self._update_lag()
                    if self._dirty and time.monotonic() - last_commit >= self.commit_interval:
                        await self.commit()
                        last_commit = time.monotonic()
            finally:
                with anyio.CancelScope(shield=True):
                    tg.cancel_scope.cancel()
                    await self.commit()

    async def _poll_without_live(self, low: list[TopicPartition]) -> dict:
        """A member assigned only replay partitions must still poll, or after
        max_poll_interval aiokafka takes it for dead and leaves the group.
        (getmany() without partitions would return replayed records too.)"""
        free = self.capacity - self.in_flight
        if not low:
            await anyio.sleep(0.2)
            return {}
        if free > 0:
            return {}  # taken below, one per free slot
        # Every slot taken: paused (_apply_backpressure), a poll that returns nothing.
        self._apply_backpressure()
        await self.consumer.getmany(*low, timeout_ms=200)
        return {}

    def _split(self, assigned) -> tuple[list[TopicPartition], list[TopicPartition]]:
        live = sorted(tp for tp in assigned if tp.topic not in self.low_priority)
        low = sorted(tp for tp in assigned if tp.topic in self.low_priority)
        return live, low

    def _start(self, tg, batch) -> None:
        for tp, records in batch.items():
            part = self.partitions.setdefault(tp, PartitionOffsets())
            for record in records:
                part.take(record.offset)
                self._serial += 1
                self.started_at[self._serial] = time.monotonic()
                self.in_flight += 1
                if tp.topic not in self.low_priority:
                    self.live_in_flight += 1
                self.metrics.in_flight.labels(stage=self.stage).inc()
                tg.start_soon(self._run_one, tp, record, self._serial)

    async def _live_caught_up(self, live: list[TopicPartition]) -> bool:
        """Whether every live partition has been read up to its high watermark
        (from fetch responses: end_offsets is wrong on tansu). Unknown counts as
        a backlog: replayed work waits until the live topics have been seen."""
        for tp in live:
            high = self.consumer.highwater(tp)
            if high is None:
                return False
            part = self.partitions.get(tp)
            position = part.next_offset if part and part.next_offset is not None \
                else await self.consumer.position(tp)
            if position < high:
                return False
        return True

    async def _run_one(self, tp: TopicPartition, record: ConsumerRecord, serial: int) -> None:
        slot = consumer_slots.Slot(lambda: self._step_aside(tp, serial),
                                   lambda: self._run_begins(serial))
        consumer_slots.hold(slot)  # this task's own context: the handler finds it there
        try:
            await self._handle(tp, record)
        finally:
            if slot.aside:
                self.aside -= 1
                self.metrics.parked_aside.labels(stage=self.stage).dec()
            else:
                self._leave(tp, serial)
        part = self.partitions.get(tp)
        if part is not None:  # None: revoked meanwhile; the new owner redoes it idempotently
            part.pending.discard(record.offset)
            self._dirty = True
        self.finished += 1
        self.last_finished = time.monotonic()
        self.metrics.last_progress.labels(stage=self.stage).set(time.time())
        self._export_oldest()
        self._apply_backpressure()

    def _leave(self, tp: TopicPartition, serial: int) -> None:
        del self.started_at[serial]
        self.in_flight -= 1
        if tp.topic not in self.low_priority:
            self.live_in_flight -= 1
        self.metrics.in_flight.labels(stage=self.stage).dec()

    def _run_begins(self, serial: int) -> None:
        """A worker began the record's run (each attempt's): its stall clock
        starts now, its wait for the worker behind (doers/consumer_slots.py)."""
        if serial in self.started_at:  # not finished, not stepped aside
            self.started_at[serial] = time.monotonic()
            self._export_oldest()

    def _step_aside(self, tp: TopicPartition, serial: int) -> bool:
        """A parked record leaves the count, so the next one can be fetched."""
        if self.aside >= self.max_aside:
            return False
        self._leave(tp, serial)
        self.aside += 1
        self.metrics.parked_aside.labels(stage=self.stage).inc()
        self._export_oldest()
        self._apply_backpressure()
        return True

    async def _handle(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        failures, parked = 0, None
        try:
            while True:
                try:
                    await self.handler(record)
                    return
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception as exc:
                    # Handlers dead-letter bad input themselves; an exception here
                    # means the broker or the disk is unavailable. Keep the record
                    # uncommitted and try again: nothing is lost or skipped. It is
                    # parked meanwhile (calstream_parked_items), the delays jittered
                    # so that many such records do not all hit a recovering broker.
                    failures += 1
                    cause = fault_cause(exc) or "unknown"
                    if parked is None:
                        parked = Parked(self.metrics, self.stage, cause)
                    else:
                        parked.moved(cause)  # shown on what it waits for now
                    delay = jittered(HANDLER_BACKOFF.delay(failures), random.random())
                    log.exception("%s: handling %s[%d]@%d failed (%s); retrying in %.0fs",
                                  self.stage, tp.topic, tp.partition, record.offset,
                                  parked.cause, delay)
                    await anyio.sleep(delay)
        finally:
            if parked is not None:
                parked.release()

    def _apply_backpressure(self) -> None:
        """Pause what nothing can be taken from now, resume the rest.

        Only live work pauses the live partitions: replayed work in flight
        must not keep a live record from being fetched (and put ahead of it).
        Replayed partitions are pulled only into free slots (run's loop): with
        every slot taken a fetch of theirs could bring nothing to take, yet
        each idle fetch costs the broker (tansu: ~2 ms of CPU, ten a second,
        bench/README.md session 16), beside the runs that filled the slots.
        Judged from the assignment each turn, so partitions a rebalance brings
        get the same state at once."""
        live, low = self._split(self.consumer.assignment())
        hold = set(live) if self.live_in_flight >= self.capacity else set()
        if self.in_flight >= self.capacity:
            hold.update(low)
        paused = self.consumer.paused()
        if hold - paused:
            self.consumer.pause(*(hold - paused))
        if paused - hold:
            self.consumer.resume(*(paused - hold))

    def _update_lag(self) -> None:
        # Every subscribed topic gets a value: one whose partitions all moved
        # to another member must read 0 here, not its last lag.
        lag: dict[str, int] = {t: 0 for t in self.topics}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            part = self.partitions.get(tp)
            if high is None:
                continue
            position = part.next_offset if part and part.next_offset is not None else None
            if position is None:
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position)
        for topic, value in lag.items():
            self.metrics.consumer_lag.labels(topic=topic).set(value)

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        offsets = {}
        for tp, part in self.partitions.items():
            if only is not None and tp not in only:
                continue
            pos = part.commit_position()
            if pos is not None and pos != part.committed:
                offsets[tp] = OffsetAndMetadata(pos, "")
        if not offsets:
            self._dirty = False
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance is under way; the records will be redelivered and found done.
            log.warning("%s: commit failed (%s); will retry", self.stage, exc,
                        extra={"stage": self.stage, "fault": "infrastructure"})
            return
        for tp, om in offsets.items():
            if tp in self.partitions:
                self.partitions[tp].committed = om.offset
        self._dirty = False


def fault_cause(exc: BaseException) -> str | None:
    """The infrastructure behind ``exc``: a disk or CRDS fault, or the broker; None if
    neither. Inside an exception group (a task group's) too: the first one named."""
    if isinstance(exc, BaseExceptionGroup):
        return next(filter(None, map(fault_cause, exc.exceptions)), None)
    return infrastructure_cause(exc) or broker_fault(exc)
