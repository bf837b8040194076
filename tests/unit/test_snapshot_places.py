"""A snapshot's fingerprints of the records it covers are a hint: a broker
that does not answer while they are read leaves them out, and the snapshot
is written with its offsets trusted. A broker stopped just then answers
aiokafka's bare "Unable to get cluster metadata" KafkaError (neither
retriable nor a time-out): it raised out of the snapshot and ended the
planner's task (tests/integration/test_planner_parking.py met it)."""

from __future__ import annotations

from types import SimpleNamespace

import anyio
import pytest
from aiokafka.errors import KafkaError

from calstream.daemon.doers import kafka, snapshot_places
from calstream.daemon.doers.kafka.clients import NO_METADATA


@pytest.mark.parametrize("error", [KafkaError(NO_METADATA), KafkaError("the same, in a group")])
def test_a_broker_that_does_not_answer_leaves_the_fingerprints_out(monkeypatch, error):
    async def no_answer(cfg, places):
        if "group" in str(error):
            raise ExceptionGroup("reader", [KafkaError(NO_METADATA)])
        raise error

    monkeypatch.setattr(kafka, "records_at", no_answer)
    planner = SimpleNamespace(cfg=SimpleNamespace(kafka_bootstrap="127.0.0.1:1"))
    covered = anyio.run(snapshot_places.covered_now, planner, {("t.products", 0): 5})
    assert covered == {}


def test_anything_else_is_still_raised(monkeypatch):
    async def broken(cfg, places):
        raise ValueError("a bug, not the broker")

    monkeypatch.setattr(kafka, "records_at", broken)
    planner = SimpleNamespace(cfg=SimpleNamespace(kafka_bootstrap="127.0.0.1:1"))
    with pytest.raises(ValueError):
        anyio.run(snapshot_places.covered_now, planner, {("t.products", 0): 5})
