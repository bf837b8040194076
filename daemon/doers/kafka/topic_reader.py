"""Reading topics outside any consumer group: up to "now", or following them.

"Now" is the high watermark each partition reports in a fetch response.
``end_offsets``, ``seek_to_end`` and ``offsets_for_times`` are wrong on tansu
(they answer the first offset of the last stored batch + 1, or 0); the fetch
response's high watermark is right on both brokers. This is the one place
that knows it: the planner's rebuild, ``calstream status``, ``replay``,
``holds`` and ``plan`` all read through ``TopicReader``. ``PartitionEnds``
(partition_ends.py) uses ``end_offsets`` only as what never goes back on a
broker that kept its records (deciders/broker_records.py), never as where
the end is.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError
from aiokafka.structs import ConsumerRecord

from calstream.daemon.deciders import record_places
from calstream.daemon.doers.kafka import clients
from calstream.daemon.operations.config import Config
from calstream.topics import contract

# How long a read up to "now" waits for records before it looks whether it
# is at the end: half the broker's hold of an empty fetch (open_reader), so
# an empty partition's answer, which holds no record but says where its end
# is, is looked at soon after it comes, not only at fetch()'s 200 ms.
END_POLL_MS = clients.FETCH_MAX_WAIT_MS // 2


class TopicReader:
    """Every partition of some topics, assigned (no group) and read from the start."""

    def __init__(self, client: AIOKafkaConsumer, partitions: list[TopicPartition],
                 missing: list[str]):
        self._client = client
        self.partitions = partitions
        self.missing = missing  # asked-for topics the broker does not have
        self._reached: set[TopicPartition] = set()
        self._starts: dict[TopicPartition, int] = {}  # started past the beginning, unchecked
        self._tails: dict[TopicPartition, int] = {}  # lost: read only this many before the end
        self.lost: list[TopicPartition] = []  # started beyond their end: read from the start

    def start_from(self, offsets: dict[tuple[str, int], int],
                   tails: dict[tuple[str, int], int] | None = None) -> None:
        """Start the partitions named in ``offsets`` ((topic, partition) -> the
        next offset to read) there; the others stay at their beginning.

        A start beyond a partition's high watermark means the broker lost
        its records (the embedded broker keeps topics in memory and starts
        empty): such a partition is read again from its beginning, and named
        in ``lost``, once its first fetch response tells its watermark; of
        one in ``tails``, only that many records before its end (a start
        that came from a record, untrusted: a forged offset beyond the end
        read a whole partition)."""
        for tp in self.partitions:
            offset = offsets.get((tp.topic, tp.partition))
            if offset:
                self._client.seek(tp, offset)
                self._starts[tp] = offset
        self._tails = {tp: (tails or {})[tp.topic, tp.partition] for tp in self._starts
                       if (tp.topic, tp.partition) in (tails or {})}

    async def _restart_lost(self) -> None:
        for tp, start in list(self._starts.items()):
            high = self._client.highwater(tp)
            if high is None:
                continue
            del self._starts[tp]
            if high < start:
                self.lost.append(tp)
                self._reached.discard(tp)
                if tp in self._tails:  # below what retention kept: from what is left
                    self._client.seek(tp, max(0, high - self._tails[tp]))
                else:
                    await self._client.seek_to_beginning(tp)

    def _of(self, topics: set[str] | None) -> list[TopicPartition]:
        return [tp for tp in self.partitions if topics is None or tp.topic in topics]

    async def fetch(self, *, timeout_ms: int = 200, max_records: int | None = None,
                    topics: set[str] | None = None) -> list[ConsumerRecord]:
        """The next records (``timeout_ms`` of waiting at most) of ``topics`` (or all), in order."""
        if not (partitions := self._of(topics)):
            await anyio.sleep(timeout_ms / 1000)
            return []
        batch = await self._client.getmany(*partitions, timeout_ms=timeout_ms,
                                           max_records=max_records)
        return [r for tp in sorted(batch) for r in batch[tp]]

    async def behind(self, topics: set[str] | None = None) -> dict[str, int]:
        """Per topic (of ``topics``, or all), the records between where the
        reader stands and the high watermark of each partition's last fetch
        response: what is left to read as of that response. A partition
        with no response yet, or a start not yet checked against its
        watermark, counts 0 until it has one."""
        out: dict[str, int] = {}
        for tp in self.partitions:
            if topics is not None and tp.topic not in topics:
                continue
            high = self._client.highwater(tp)
            left = 0
            if high is not None and tp not in self._starts:
                left = max(0, high - await self._client.position(tp))
            out[tp.topic] = out.get(tp.topic, 0) + left
        return out

    async def positions(self) -> dict[tuple[str, int], int]:
        """Per partition, the next offset the reader would read."""
        return {(tp.topic, tp.partition): await self._client.position(tp)
                for tp in self.partitions}

    def high_watermarks(self) -> dict[TopicPartition, int | None]:
        """Per partition, the high watermark of its last fetch response (None: none yet)."""
        return {tp: self._client.highwater(tp) for tp in self.partitions}

    async def caught_up(self, topics: set[str] | None = None) -> bool:
        """Whether every partition (of ``topics``, if given) is read up to its high watermark.

        A partition counts once it has been there: a busy topic keeps moving its watermark,
        and "now" is when the reader got there. Unknown (no fetch response yet) is not."""
        await self._restart_lost()
        for tp in (partitions := self._of(topics)):
            if tp in self._starts:
                continue  # its start is not checked against its watermark yet
            if tp in self._reached:
                continue
            high = self._client.highwater(tp)
            if high is not None and await self._client.position(tp) >= high:
                self._reached.add(tp)
        return all(tp in self._reached for tp in partitions)

    async def at_end(self, topics: set[str]) -> bool:
        """Whether the partitions of ``topics`` are read up to the high
        watermark of their last fetch response, now (unlike ``caught_up``,
        which remembers having been there once)."""
        for tp in self.partitions:
            if tp.topic in topics:
                high = self._client.highwater(tp)
                if high is None or await self._client.position(tp) < high:
                    return False
        return True

    async def batches_to_end(self, *, stall_seconds: float | None = None,
                             topics: set[str] | None = None
                             ) -> AsyncIterator[list[ConsumerRecord]]:
        """The records up to "now" (of ``topics`` only, if given), a fetch at a
        time. With ``stall_seconds``: KafkaTimeoutError (a broker fault,
        retriable) once that long passes with neither a record nor the end.
        aiokafka's fetches never raise when the broker stops answering or goes
        away: they come back empty, and the read would wait for ever, unseen.
        (Measured between fetches, not by cancelling one: a cancellation inside
        aiokafka's fetch, once its connection gone, escaped the scope, ended the task.)"""
        since = time.monotonic()
        # Looked at before a fetch too: a partition whose end an earlier fetch told
        # (another topic's read) and that holds nothing more is not waited for.
        while not await self.caught_up(topics):
            if stall_seconds is not None and time.monotonic() - since > stall_seconds:
                names = ", ".join(sorted({tp.topic for tp in self._of(topics)}))
                raise KafkaTimeoutError(f"no record nor the end of {names} within "
                                        f"{stall_seconds:.0f}s")
            if records := await self.fetch(timeout_ms=END_POLL_MS, topics=topics):
                yield records
                since = time.monotonic()

    async def read_to_end(self, *, stall_seconds: float | None = None,
                          topics: set[str] | None = None) -> list[ConsumerRecord]:
        return [r async for b in self.batches_to_end(stall_seconds=stall_seconds, topics=topics)
                for r in b]

    async def start_at_tail(self, last: dict[str, int | None]) -> dict[TopicPartition, int]:
        """Start each partition of topic t at its last ``last[t]`` records (None:
        all of them); returns each partition's first retained offset.

        end_offsets is only a hint of where to start, never of where the end
        is: a start below the true end costs a few more records, never loses one."""
        begin = await self._client.beginning_offsets(self.partitions)
        end_hint = await self._client.end_offsets(self.partitions)
        for tp in self.partitions:
            n = last.get(tp.topic)
            self._client.seek(tp, begin[tp] if n is None else max(begin[tp], end_hint[tp] - n))
        return begin


@asynccontextmanager
async def open_reader(cfg: Config, names: list[str], *,
                      start: dict[tuple[str, int], int] | None = None,
                      only: set[tuple[str, int]] | None = None,
                      tails: dict[tuple[str, int], int] | None = None, **options: Any
                      ) -> AsyncIterator[TopicReader]:
    """A TopicReader on every partition of ``names`` (those that exist; of
    them, those in ``only`` if given), from their beginning or, for those in
    ``start``, from there (``start_from``).

    The broker answers a fetch of an empty partition only once its fetch
    wait is over, and that answer (its high watermark, 0) is the partition's
    end: with aiokafka's 500 ms every empty topic read up to "now" cost half
    a second, eight of them at a planner's start on new topics (~4 s of each
    test daemon's start). So 100 ms, as observers fetch (clients.py), unless
    ``fetch_max_wait_ms`` is given: a reader that follows its topics for
    good (the planner's run) keeps the longer one, since an idle fetch costs
    the broker about the same CPU whatever its wait, and a follower's come
    five times less often (tests/unit/test_fetch_waits.py)."""
    options.setdefault("fetch_max_wait_ms", clients.FETCH_MAX_WAIT_MS)
    client = clients.reader(cfg, **options)
    try:
        await client.start()  # inside: a client that failed to connect is stopped too
        existing = await client.topics()  # refreshes metadata: a topic may be moments old
        partitions = [TopicPartition(name, p) for name in names if name in existing
                      for p in sorted(client.partitions_for_topic(name) or ())
                      if only is None or (name, p) in only]
        if partitions:
            client.assign(partitions)
            await client.seek_to_beginning(*partitions)
        reader = TopicReader(client, partitions, [n for n in names if n not in existing])
        reader.start_from(start or {}, tails)
        yield reader
    finally:
        await clients.stopped(client)  # also when the reader's task is cancelled


async def read_to_end(cfg: Config, name: str, *,
                      start: dict[tuple[str, int], int] | None = None) -> list[ConsumerRecord]:
    """Every record of a topic, from the beginning (or ``start``) up to "now";
    KafkaTimeoutError if the broker stops answering part-way (for
    ``broker_timeout_seconds``): a command's read would otherwise wait for ever."""
    async with open_reader(cfg, [name], start=start) as reader:
        return await reader.read_to_end(stall_seconds=cfg.broker_timeout_seconds)


# A fetch's bytes while a topic is folded: tansu ignores the per-partition
# bound aiokafka asks by default (1 MiB) and answered 5.8 MB at once, and the
# next fetch is made while a batch is folded. A record larger comes whole
# all the same (measured on tansu, as Kafka does).
FOLD_FETCH = {"max_partition_fetch_bytes": 1 << 20, "fetch_max_bytes": 1 << 20}


async def fold_to_end(cfg: Config, name: str,
                      on_batch: Callable[[list[ConsumerRecord]], None]) -> None:
    """Every record of a topic up to "now", given a fetch at a time to
    ``on_batch`` (called in a thread: it may decode each record), which
    keeps what it needs: the last record of each key, as compaction would
    (``holds list``, ``plan list``). Read whole (``read_to_end``), a topic
    tansu never compacts was held in memory at once, every record of every
    week. KafkaTimeoutError as ``read_to_end``."""
    async with open_reader(cfg, [name], **FOLD_FETCH) as reader:
        async for batch in reader.batches_to_end(stall_seconds=cfg.broker_timeout_seconds):
            await anyio.to_thread.run_sync(on_batch, batch)


async def read_places(cfg: Config, starts: dict[tuple[str, int], int],
                      on_batch: Callable[[list[ConsumerRecord]], None], *,
                      tails: dict[tuple[str, int], int] | None = None
                      ) -> dict[tuple[str, int], int]:
    """The records of the partitions named in ``starts`` only, each from its
    start up to "now", given a fetch at a time to ``on_batch`` (so what was
    read counts even if the read is then cancelled); returns where each was
    read to. A start beyond a partition's end (a topic recreated) reads it
    from its beginning, or its last ``tails`` records (``start_from``); one
    below what retention kept, from what is left (auto_offset_reset="earliest")."""
    if not starts:
        return {}
    async with open_reader(cfg, sorted({t for t, _ in starts}), start=starts,
                           only=set(starts), tails=tails) as reader:
        async for batch in reader.batches_to_end(stall_seconds=cfg.broker_timeout_seconds):
            on_batch(batch)
        return await reader.positions()


async def is_empty(cfg: Config, name: str, timeout: float = 10.0) -> bool:
    """Whether a topic holds no record at all (every high watermark is 0)."""
    async with open_reader(cfg, [name]) as reader:
        if not reader.partitions:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await reader.fetch(max_records=1):
                return False
            highs = list(reader.high_watermarks().values())
            if all(h is not None for h in highs):
                return all(h == 0 for h in highs)
        # A broker fault (broker_fault: retriable), not a bare TimeoutError: a
        # broker lost while the daemon starts is waited for, not an exit.
        raise KafkaTimeoutError(f"no fetch response for {name} within {timeout}s")


async def require_described(cfg: Config, name: str, why: str) -> None:
    """UnknownTopicOrPartitionError (retriable: a broker fault, waited for)
    if the broker's metadata leaves ``name`` out, saying ``why`` that matters."""
    async with open_reader(cfg, [name]) as reader:
        if reader.missing:
            raise UnknownTopicOrPartitionError(
                f"the broker's metadata leaves out {name} (an error for that topic, or no "
                f"right to describe it): {why}")


async def record_at(cfg: Config, name: str, partition: int, offset: int,
                    timeout: float = 10.0) -> ConsumerRecord | str:
    """The record at ``offset`` of ``name``'s partition ``partition``, or why
    there is none (deciders/record_places.py): GONE (no such topic or
    partition, or it ends at or before ``offset``: a broker that lost its
    records, a topic recreated) or EXPIRED (what is left of it begins after
    ``offset``: retention removed it). KafkaTimeoutError, a retriable broker
    fault, when no fetch answers within ``timeout``. One partition assigned,
    one record fetched: cheap on a topic of months."""
    place = (name, partition, offset)
    return (await records_at(cfg, [place], timeout))[place]


async def records_at(cfg: Config, places: list[tuple[str, int, int]], timeout: float = 10.0
                     ) -> dict[tuple[str, int, int], ConsumerRecord | str]:
    """``record_at`` of each (topic, partition, offset) of ``places``, with one client."""
    client = clients.reader(cfg)
    try:
        await client.start()
        existing = await client.topics()
        found: dict[tuple[str, int, int], ConsumerRecord | str] = {}
        for place in dict.fromkeys(places):
            name, partition, offset = place
            if name not in existing or partition not in (client.partitions_for_topic(name) or ()):
                found[place] = record_places.GONE
                continue
            found[place] = await _one_record(client, TopicPartition(name, partition), offset,
                                             timeout)
        return found
    finally:
        await clients.stopped(client)


async def last_records(cfg: Config, name: str, timeout: float = 10.0) -> list[ConsumerRecord]:
    """The record at the end of each partition of ``name`` that holds one
    there (as ListOffsets tells its end), the longest partition's first. One
    record fetched a partition: cheap on a topic of months."""
    client = clients.reader(cfg)
    try:
        await client.start()
        if name not in await client.topics():
            return []
        partitions = [TopicPartition(name, p)
                      for p in sorted(client.partitions_for_topic(name) or ())]
        ends = await client.end_offsets(partitions) if partitions else {}
        found = []
        for tp, end in sorted(ends.items(), key=lambda te: -te[1]):
            if end > 0 and not isinstance(
                    record := await _one_record(client, tp, end - 1, timeout), str):
                found.append(record)
        return found
    finally:
        await clients.stopped(client)


async def _one_record(client: AIOKafkaConsumer, tp: TopicPartition, offset: int,
                      timeout: float) -> ConsumerRecord | str:
    client.assign([tp])
    client.seek(tp, offset)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = (await client.getmany(tp, timeout_ms=200, max_records=1)).get(tp)
        high = client.highwater(tp)
        verdict = record_places.place_verdict(
            offset, found[0].offset if found else None, high,
            await client.position(tp) if high is not None else None)
        if verdict == record_places.FOUND:
            return found[0]
        if verdict is not None:
            return verdict
    raise KafkaTimeoutError(f"no fetch response for {tp.topic} within {timeout}s")


async def read_topics(cfg: Config, names: list[str]):
    """Yield (record, Message | InvalidMessage) from topics, from the beginning
    and on as records come, without a consumer group.

    For observers (the demo, tests, subscribers): nothing is committed, every
    partition is read, and an invalid record is yielded with its error rather
    than stopping the reader.
    """
    # The stages' fetch wait: with Kafka's default (500 ms) tansu held a new
    # record up to ~250 ms before an observer saw it (clients.group_consumer).
    client = AIOKafkaConsumer(*names, **clients.client_options(
                                  cfg, held_ms=clients.FETCH_MAX_WAIT_MS), group_id=None,
                              enable_auto_commit=False, auto_offset_reset="earliest",
                              fetch_max_wait_ms=clients.FETCH_MAX_WAIT_MS)
    await client.start()
    try:
        async for record in client:
            try:
                yield record, contract.decode(record.value)
            except contract.InvalidMessage as exc:
                yield record, exc
    finally:
        await client.stop()
