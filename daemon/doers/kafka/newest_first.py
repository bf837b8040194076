"""Reading a topic of months from its end backwards, a bounded window at a time.

``calstream deadletters list`` read every dead letter ever kept (100k-1M of
them, each up to 64 KiB) before printing the first: minutes and gigabytes at
3 a.m. for the last fifty. ``NewestFirst`` reads each partition from its end
back, ``window`` records at a time, and hands the records on newest first
across partitions; the caller stops when it has what it wants. At most one
window per partition is held, whatever the topic's size.

The end of a partition is the high watermark of a fetch response (right on
tansu and on Kafka, topic_reader.py); ``end_offsets`` only says where to
fetch from for it (on tansu the first offset of the last batch + 1, never
beyond the end), so finding the end costs one batch per partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import ConsumerRecord

from calstream.daemon.doers.kafka import clients
from calstream.daemon.operations.config import Config

WINDOW = 50  # records per partition per read: at most ~3.5 MB of 64 KiB letters


class NewestFirst:
    """Records of one topic, newest first (by ``when(record)``, a sortable
    value: across partitions; within one, by offset from its end back).
    ``records_read`` counts what was fetched, and ``left()`` what was not
    (records, per partition, below where the reading got to)."""

    def __init__(self, cfg: Config, name: str, *, when: Callable[[ConsumerRecord], Any],
                 window: int = WINDOW):
        self.cfg, self.name, self.when, self.window = cfg, name, when, max(1, window)
        self.client: AIOKafkaConsumer | None = None
        self.begin: dict[TopicPartition, int] = {}
        self.below: dict[TopicPartition, int] = {}  # the next window ends here (exclusive)
        self.buffers: dict[TopicPartition, list[ConsumerRecord]] = {}  # newest last
        self.records_read = 0

    async def __aenter__(self) -> NewestFirst:
        self.client = clients.reader(self.cfg)
        try:
            await self.client.start()
            existing = await self.client.topics()
            tps = [TopicPartition(self.name, p) for p in sorted(
                self.client.partitions_for_topic(self.name) or ())] \
                if self.name in existing else []
            if tps:
                self.client.assign(tps)
                self.begin = await self.client.beginning_offsets(tps)
                self.below = await self._ends(tps)
                self.buffers = {tp: [] for tp in tps}
        except BaseException:
            await clients.stopped(self.client)
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        if self.client is not None:
            await clients.stopped(self.client)

    async def _ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end: the high watermark of a fetch from the end's hint."""
        hint = await self.client.end_offsets(tps)
        for tp in tps:
            self.client.seek(tp, max(self.begin[tp], hint[tp] - 1))
        ends: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + self.cfg.broker_timeout_seconds
        while len(ends) < len(tps):
            wanted = [tp for tp in tps if tp not in ends]
            await self.client.getmany(*wanted, timeout_ms=200, max_records=1)
            for tp in wanted:
                high = self.client.highwater(tp)
                if high is not None:
                    ends[tp] = max(high, self.begin[tp])
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"no fetch response for {self.name} within "
                                        f"{self.cfg.broker_timeout_seconds:.0f}s")
        return ends

    async def _fill(self, tp: TopicPartition) -> None:
        """The next window of ``tp`` back from where the last one began."""
        hi = self.below[tp]
        lo = max(self.begin[tp], hi - self.window)
        self.below[tp] = lo
        if lo >= hi:
            return
        # Only this partition fetched: the client's fetcher reads ahead on
        # every partition assigned and not paused, past windows already read.
        self.client.pause(*[other for other in self.buffers if other != tp])
        self.client.resume(tp)
        self.client.seek(tp, lo)
        got: list[ConsumerRecord] = []
        since = time.monotonic()
        while await self.client.position(tp) < hi:
            batch = (await self.client.getmany(tp, timeout_ms=200,
                                               max_records=hi - lo)).get(tp, [])
            got += [r for r in batch if lo <= r.offset < hi]
            if batch:
                since = time.monotonic()
            high = self.client.highwater(tp)
            if high is not None and await self.client.position(tp) >= min(high, hi):
                break  # retention removed part of the window, or it is read
            if time.monotonic() - since > self.cfg.broker_timeout_seconds:
                raise KafkaTimeoutError(f"no record of {self.name} within "
                                        f"{self.cfg.broker_timeout_seconds:.0f}s")
        self.records_read += len(got)
        self.buffers[tp] = got

    async def next(self) -> ConsumerRecord | None:
        """The newest record not yet handed on, or None when none is left."""
        for tp, buffer in self.buffers.items():
            while not buffer and self.below[tp] > self.begin[tp]:
                await self._fill(tp)
                buffer = self.buffers[tp]
        heads = [tp for tp, buffer in self.buffers.items() if buffer]
        if not heads:
            return None
        newest = max(heads, key=lambda tp: self.when(self.buffers[tp][-1]))
        return self.buffers[newest].pop()

    def left(self) -> int:
        """Records not handed on: those buffered and those below the windows read."""
        return sum(len(b) for b in self.buffers.values()) + sum(
            self.below[tp] - self.begin[tp] for tp in self.below)
