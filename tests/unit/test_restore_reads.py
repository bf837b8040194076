"""The planner's restore reads its topics with one reader (planner_clients.TailReads).

Each topic's own reader cost its client's start, metadata, assignment and,
on an empty topic, a fetch wait of the broker: ~0.5 s of a start on new
topics (bench/restore_reads.py). One reader now, read a topic at a time in
the order the records are applied (work orders, holds, plans); a read the
broker fails is made again whole by a new reader on the topics left, from
the planner's positions. The readers here are stand-ins that say what they
were asked; the real broker's side is tests/integration/test_planner_restore_heal.py.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import anyio
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from calstream.daemon.doers import kafka, planner_clients, planner_restore
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.topics.catalog import Topics

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Broker:
    """Topics of records; ``fail`` names topics whose first read stalls."""

    def __init__(self, records: dict[str, int], fail: set[str] = frozenset(),
                 lost: set[str] = frozenset()):
        self.records, self.fail, self.lost = records, set(fail), set(lost)
        self.opened: list[tuple[list[str], dict]] = []  # each reader: its topics, its starts
        self.reads: list[set[str]] = []

    @contextlib.asynccontextmanager
    async def open_reader(self, cfg, names, *, start=None, **_):
        self.opened.append((list(names), dict(start or {})))
        broker = self

        class Reader:
            partitions = [TopicPartition(n, 0) for n in names]
            lost = [tp for tp in partitions if tp.topic in broker.lost]

            async def read_to_end(self, *, stall_seconds=None, topics=None):
                topics = set(topics or names)  # none asked: all of its own
                broker.reads.append(topics)
                if broker.fail & topics:
                    broker.fail -= topics
                    raise KafkaTimeoutError("no record nor the end")
                return [SimpleNamespace(topic=t, partition=0, offset=o, value=b"not a record")
                        for t in sorted(topics)
                        for o in range((start or {}).get((t, 0), 0), broker.records.get(t, 0))]
        yield Reader()


def _planner(tmp_path) -> Planner:
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "retry_backoff": 0.01})
    return Planner(cfg, publisher=None, metrics=Metrics(), topics=Topics("t."))


async def test_the_restore_opens_one_reader_and_reads_orders_then_holds_then_plans(
        tmp_path, monkeypatch):
    planner = _planner(tmp_path)
    work = [planner.topics.name(t) for t in planner._work_topics()]
    broker = Broker({work[0]: 3, "t.plans": 2})
    monkeypatch.setattr(kafka, "open_reader", broker.open_reader)
    await planner_restore._restore(planner)
    assert [names for names, _ in broker.opened] == [[*work, "t.holds", "t.plans"]]
    assert broker.reads == [{t} for t in (*work, "t.holds", "t.plans")]
    assert planner.positions == {(work[0], 0): 3, ("t.plans", 0): 2}


async def test_a_failed_read_is_made_again_whole_by_a_new_reader_on_the_topics_left(
        tmp_path, monkeypatch):
    planner = _planner(tmp_path)
    planner.positions = {("t.orders", 0): 1}
    broker = Broker({"t.orders": 4, "t.holds": 3, "t.plans": 1}, fail={"t.holds"},
                    lost={"t.plans"})
    monkeypatch.setattr(kafka, "open_reader", broker.open_reader)
    async with planner_clients.tail_reads(planner, ["t.orders", "t.holds", "t.plans"]) as reads:
        orders, _, lost = await reads.read(["t.orders"])
        assert [r.offset for r in orders] == [1, 2, 3] and lost == []
        planner.positions[("t.orders", 0)] = 4  # as read_topic keeps them
        holds, partitions, lost = await reads.read(["t.holds"])
        assert [r.offset for r in holds] == [0, 1, 2]  # whole, once the broker answers
        assert partitions == [TopicPartition("t.holds", 0)] and lost == []
        _, _, lost = await reads.read(["t.plans"])
        assert lost == [TopicPartition("t.plans", 0)]  # a topic's lost partitions, its own
    assert broker.opened == [(["t.orders", "t.holds", "t.plans"], {("t.orders", 0): 1}),
                             (["t.holds", "t.plans"], {("t.orders", 0): 4})]


async def test_the_shared_reader_is_closed_when_the_restore_is_cancelled(tmp_path, monkeypatch):
    planner = _planner(tmp_path)
    closed = []

    @contextlib.asynccontextmanager
    async def open_reader(cfg, names, **_):
        try:
            yield SimpleNamespace(partitions=[], lost=[],
                                  read_to_end=lambda **_: anyio.sleep_forever())
        finally:
            closed.append(names)

    monkeypatch.setattr(kafka, "open_reader", open_reader)

    with anyio.move_on_after(0.05):
        async with planner_clients.tail_reads(planner, ["t.holds"]) as reads:
            await reads.read(["t.holds"])
    assert closed == [["t.holds"]]
