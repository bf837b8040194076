"""How long the broker may hold a fetch of a topic read up to "now".

A fetch of an empty partition is answered only when its wait is over, and
that answer is the partition's end: a reader that drains topics (the
planner's restore, the commands, the start's checks) waits once per empty
topic. With aiokafka's 500 ms a planner started on new topics read eight of
them, ~4 s of every start (each test daemon's). The planner's run, which
follows its topics for good, keeps the longer wait: fewer idle fetches.
"""

from __future__ import annotations

from types import SimpleNamespace

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from calstream.daemon.doers import kafka, planner_clients
from calstream.daemon.doers.kafka.clients import DEFAULT_FETCH_WAIT_MS, FETCH_MAX_WAIT_MS
from calstream.daemon.doers.kafka.topic_reader import TopicReader
from calstream.daemon.operations.config import Config


@pytest.fixture
def brokerless(monkeypatch):
    """Readers that open without a broker: no topic exists."""
    async def started(self):
        pass

    async def topics(self):
        return set()

    monkeypatch.setattr(AIOKafkaConsumer, "start", started)
    monkeypatch.setattr(AIOKafkaConsumer, "topics", topics)


def _wait_of_reader(opening) -> int:
    async def opened() -> int:
        async with opening() as reader:
            return reader._client._fetch_max_wait_ms
    return anyio.run(opened)


def test_a_read_up_to_now_is_not_held_by_the_broker_longer_than_an_observer_s_fetch(brokerless):
    cfg = Config(kafka_bootstrap="127.0.0.1:1")
    assert _wait_of_reader(lambda: kafka.open_reader(cfg, ["t.holds"])) == FETCH_MAX_WAIT_MS
    # one that asks keeps its own (the console's status view, the planner's run)
    assert _wait_of_reader(lambda: kafka.open_reader(
        cfg, ["t.holds"], fetch_max_wait_ms=DEFAULT_FETCH_WAIT_MS)) == DEFAULT_FETCH_WAIT_MS


def test_the_planner_s_following_reader_keeps_aiokafka_s_wait(brokerless):
    class Waits:
        async def step(self, what, attempt, cause_of, **_):
            return await attempt()

    planner = SimpleNamespace(cfg=Config(kafka_bootstrap="127.0.0.1:1"), positions={},
                              start_waits=Waits())
    assert _wait_of_reader(lambda: planner_clients.open_reader(planner, ["t.products"])) \
        == DEFAULT_FETCH_WAIT_MS == 500


def test_a_read_up_to_now_looks_for_its_end_before_the_broker_s_hold_is_over_again():
    """An empty partition's fetch answers with no record, only its end (its
    high watermark): the read looks at that before waiting longer than the
    broker held it. (At fetch()'s 200 ms each empty topic cost 200 ms.)"""
    class EmptyTopic:
        waits: list[int] = []

        async def getmany(self, *partitions, timeout_ms, max_records=None):
            self.waits.append(timeout_ms)
            return {}

        def highwater(self, tp):
            return 0 if self.waits else None  # told by the first fetch response

        async def position(self, tp):
            return 0

    client = EmptyTopic()
    reader = TopicReader(client, [TopicPartition("t.holds", 0)], [])
    assert anyio.run(reader.read_to_end) == []
    assert client.waits and max(client.waits) < FETCH_MAX_WAIT_MS


def test_a_topic_whose_end_an_earlier_read_s_fetch_told_is_not_waited_for_again():
    """The restore's one reader reads its topics a topic at a time; a fetch
    answers for every partition. A topic read later whose end that answer
    told, and that holds nothing more, is done at once: each such empty
    topic waited a fetch (50 ms) more, ~0.25 s of a start on new topics."""
    class ToldTopics:
        waits: list[int] = []

        async def getmany(self, *partitions, timeout_ms, max_records=None):
            self.waits.append(timeout_ms)
            return {}

        def highwater(self, tp):
            return 0  # the first read's fetch told every partition's end

        async def position(self, tp):
            return 0

    client = ToldTopics()
    reader = TopicReader(client, [TopicPartition("t.holds", 0), TopicPartition("t.plans", 0)], [])
    assert anyio.run(lambda: reader.read_to_end(topics={"t.plans"})) == []
    assert client.waits == []
