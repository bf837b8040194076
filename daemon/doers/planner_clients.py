"""The planner's Kafka clients, each started as a start step.

They are made on the planner's own loop (doers/planner_thread.py: aiokafka's
clients belong to the loop that started them): its producer, and the readers
of its restore and of its run. A broker that does not answer when the
planner starts -- or starts again after a compaction or an unreadable
snapshot -- is waited for as every other start step waits for it
(doers/start_waits.py: jittered retries, then parked in
``calstream_parked_items{stage="start"}``, named in /readyz, resumed by
itself); it is not an error that ends the planner's loop, and with it the
daemon. StartWaits.step is safe on that loop's thread: what it shares with
the daemon's loop is the wait /readyz shows (one reference, replaced whole),
thread-safe metrics, and the client loggers it quiets (under a lock).

The restore's reads and sends wait the same way (``TailReads``,
``restore_sends_waited``): /readyz then names the broker the restore waits
for rather than "catching up", which it says while the planner reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from calstream.daemon.doers import kafka
from calstream.daemon.doers.kafka.clients import DEFAULT_FETCH_WAIT_MS
from calstream.daemon.doers.start_waits import StartWaits, broker_cause, started
from calstream.daemon.operations.config import Config

if TYPE_CHECKING:
    from calstream.daemon.doers.planner_loop import Planner


PLANNER = "planner"  # the owner of the planner's waits (StartWaits.waiting_of)


def waited_broker(cfg: Config, client: str) -> str:
    return f"the broker {cfg.kafka_bootstrap} (the planner's {client})"


def waits_of(planner: Planner) -> StartWaits:
    """The daemon's StartWaits; a planner outside a daemon (a tool, a test)
    waits with its own, shown in its metrics only."""
    return planner.start_waits or StartWaits(planner.cfg, planner.metrics)


def catching_up(planner: Planner | None, waits: StartWaits) -> str | None:
    """/readyz's line for a planner (if any) not caught up, unless the wait
    it shows already is the planner's: it does not read then, it waits."""
    if planner is None or planner.caught_up or waits.waiting_of(PLANNER):
        return None
    return "planner catching up with its history (snapshot tail or rebuild)"


async def started_producer(cfg: Config, waits: StartWaits) -> Any:
    """The planner's own producer, started once the broker answers."""
    return await waits.step(waited_broker(cfg, "producer"),
                            partial(started, partial(kafka.producer, cfg)), broker_cause,
                            owner=PLANNER)


@contextlib.asynccontextmanager
async def open_reader(planner: Planner, names: list[str]) -> AsyncIterator[kafka.TopicReader]:
    """kafka.open_reader on ``names`` from the planner's positions, opened
    (connected, the topics' partitions found and assigned) once the broker
    answers. It follows its topics for good: aiokafka's fetch wait, not the
    short one of a read up to "now" (kafka.open_reader)."""
    async with contextlib.AsyncExitStack() as stack:
        def attempt():  # a new reader each time: one that failed to open closed itself
            return stack.enter_async_context(
                kafka.open_reader(planner.cfg, names, start=planner.positions,
                                  fetch_max_wait_ms=DEFAULT_FETCH_WAIT_MS))
        yield await waits_of(planner).step(waited_broker(planner.cfg, "topic reader"), attempt,
                                           broker_cause, owner=PLANNER)


class TailReads:
    """The restore's topics read with one reader, a few at a time, in the order
    the restore asks (``read``): one client's start, metadata and assignment,
    and one fetch wait of the broker on empty topics, instead of each topic's
    own (~0.1-0.2 s each on the embedded broker; bench/restore_reads.py).

    Each ``read`` gives its topics' records from the planner's positions up
    to "now", whole or not at all: a broker that stops answering or goes away
    during it (no record nor the end for ``broker_timeout_seconds``, the
    clients' own request time-out) is waited for as at the reader's open, and
    that read made again whole, from the same positions, by a new reader on
    the topics not read yet (the one that failed is closed): never a part of
    the records (a new reader also finds what a broker started again empty
    lost: TopicReader.lost). While a read takes its topics' records, aiokafka
    keeps at most one fetch response of each other partition, until that
    topic's read takes it."""

    def __init__(self, planner: Planner, names: list[str]):
        self._planner = planner
        self._left = list(names)  # not read yet: those a new reader opens on
        self._open: contextlib.AsyncExitStack | None = None
        self._reader: kafka.TopicReader | None = None

    async def read(self, names: list[str]) -> tuple[list[kafka.Record], list, list]:
        """The records of ``names`` from the planner's positions up to "now",
        their partitions and those of them lost (TopicReader.lost)."""
        planner, wanted = self._planner, set(names)

        async def attempt():
            try:
                if self._reader is None:
                    self._open = contextlib.AsyncExitStack()
                    self._reader = await self._open.enter_async_context(kafka.open_reader(
                        planner.cfg, self._left, start=planner.positions))
                records = await self._reader.read_to_end(
                    stall_seconds=planner.cfg.broker_timeout_seconds, topics=wanted)
            except BaseException:
                await self.aclose()  # the next attempt opens a new reader
                raise
            return (records, [tp for tp in self._reader.partitions if tp.topic in wanted],
                    [tp for tp in self._reader.lost if tp.topic in wanted])
        read = await waits_of(planner).step(waited_broker(planner.cfg, "topic reader"), attempt,
                                            broker_cause, owner=PLANNER)
        self._left = [n for n in self._left if n not in wanted]
        return read

    async def aclose(self) -> None:
        opened, self._open, self._reader = self._open, None, None
        if opened is not None:
            await opened.aclose()


@contextlib.asynccontextmanager
async def tail_reads(planner: Planner, names: list[str]) -> AsyncIterator[TailReads]:
    """TailReads on ``names``, its reader closed at the end (or a cancellation)."""
    reads = TailReads(planner, names)
    try:
        yield reads
    finally:
        with anyio.CancelScope(shield=True):
            await reads.aclose()


@contextlib.contextmanager
def restore_sends_waited(planner: Planner) -> Iterator[None]:
    """While the restore runs, a send of the planner's publisher that the
    broker does not acknowledge is shown in /readyz as what it waits for
    (GatedPublisher.restore_waits); later sends are parked unnamed there."""
    publisher = planner.publisher
    if not hasattr(publisher, "restore_waits"):  # a plain Publisher (a tool, a test)
        yield
        return
    publisher.restore_waits = waits_of(planner)
    try:
        yield
    finally:
        publisher.restore_waits = None
