"""A record whose handler raises is retried in place and shown parked on
what it waits for: on the fault of its latest try, not of its first."""

from __future__ import annotations

import errno

import anyio
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from calstream.daemon.deciders.retry_policy import Backoff
from calstream.daemon.doers.kafka import concurrent_consumer
from calstream.daemon.doers.kafka.concurrent_consumer import ConcurrentConsumer
from calstream.daemon.operations.metrics import Metrics

pytestmark = pytest.mark.anyio


def _parked(metrics: Metrics) -> list[dict[str, str]]:
    return [s.labels for f in metrics.registry.collect() for s in f.samples
            if s.name == "calstream_parked_items" and s.value > 0]


async def test_a_record_retried_in_place_is_shown_on_its_latest_fault(monkeypatch):
    """An unforeseen error first ("unknown"), then the disk full: the metric
    kept "unknown" while the record waited for space."""
    monkeypatch.setattr(concurrent_consumer, "HANDLER_BACKOFF", Backoff(first=0.001))
    metrics = Metrics()
    seen: list[list[dict[str, str]]] = []
    faults = [RuntimeError("something unforeseen"),
              OSError(errno.ENOSPC, "No space left on device")]

    async def handler(record) -> None:
        seen.append(_parked(metrics))
        if faults:
            raise faults.pop(0)

    loop = ConcurrentConsumer(None, stage="detector1", handler=handler, capacity=1,
                              metrics=metrics, topics=["t"])
    with anyio.fail_after(10):
        record = ConsumerRecord("t", 0, 7, 0, 0, None, b"{}", None, 0, 2, [])
        await loop._handle(TopicPartition("t", 0), record)
    assert [[s["cause"] for s in shown] for shown in seen] == [[], ["unknown"], ["disk_full"]]
    assert _parked(metrics) == []
