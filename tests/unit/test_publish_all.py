"""Publisher.publish_all: records sent together, every acknowledgement
awaited, one round trip for a set that used to cost one each (what a broker
that lost its topics gets again at a start)."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from aiokafka.errors import KafkaTimeoutError

from calstream.daemon.doers.kafka.publisher import Publisher
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics


class _Producer:
    """aiokafka's send: hands over, answers later; ``failing``: keys whose
    acknowledgement fails (a broker lost meanwhile)."""

    def __init__(self, failing=()):
        self.failing = set(failing)
        self.handed: list[bytes] = []
        self.pending: list[asyncio.Future] = []

    async def send(self, topic, value, key):
        self.handed.append(key)
        answer = asyncio.get_running_loop().create_future()
        if key.decode() in self.failing:
            answer.set_exception(KafkaTimeoutError("no answer"))
        else:
            self.pending.append(answer)  # answered only once every record is handed over
        return answer


def _holds(n: int) -> list[tuple[str, str, contract.Message]]:
    return [("holds", f"jw01234001001_02101_0000{k}_nrcb1", contract.build(
        "hold", contract.event_id("hold", k), exposure_id=f"jw01234001001_02101_0000{k}_nrcb1",
        state="held", reason="ENGQLPTG = PLANNED", since=contract.utc_now(),
        digest=f"sha256:{k:064x}")) for k in range(1, n + 1)]


def _answering(producer: _Producer, publisher: Publisher, items) -> tuple[int, int]:
    """(what publish_all returned, how many records were handed over when
    the broker first answered): the broker answers every 10 ms."""
    first: list[int] = []

    async def broker():
        while len(producer.handed) < len(items) or not all(a.done() for a in producer.pending):
            await anyio.sleep(0.01)
            first.append(len(producer.handed))
            for answer in producer.pending:
                if not answer.done():
                    answer.set_result(None)

    async def run():
        answering = asyncio.get_running_loop().create_task(broker())
        try:
            return await publisher.publish_all(items)
        finally:
            await answering
    return anyio.run(run), first[0]


def test_every_record_is_handed_over_in_order_before_any_answer_is_awaited():
    producer = _Producer()
    publisher = Publisher(producer, Topics(), Metrics())
    items = _holds(5)
    assert _answering(producer, publisher, items) == (5, 5)  # one round trip, not five
    assert [k.decode() for k in producer.handed] == [key for _, key, _ in items]


def test_a_failed_acknowledgement_is_raised_once_every_answer_is_in():
    items = _holds(4)
    producer = _Producer(failing={items[1][1]})
    publisher = Publisher(producer, Topics(), Metrics())
    with pytest.raises(KafkaTimeoutError):
        _answering(producer, publisher, items)
    assert all(answer.done() for answer in producer.pending)
    assert len(producer.handed) == 4  # the rest still sent: the caller sends the set again
