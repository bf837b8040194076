"""Where a daemon's newest product event went is noted by the publisher of a
daemon with the planner role (noted_places.py): its recovery judges the
products topic by that place, not by the topic being empty (one event sent
after a loss hid it)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import anyio
from aiokafka.structs import RecordMetadata, TopicPartition

from calstream.daemon.deciders import record_places
from calstream.daemon.doers import broker_recovery, kafka
from calstream.daemon.doers.kafka.publisher import Publisher
from calstream.daemon.doers.noted_places import product_events_place
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .test_forged_work_records import _Producer
from .test_provenance_records import publish


def _product(tmp_path) -> contract.Message:
    _, record = publish(ProductStore(tmp_path / "products"))
    return contract.Message("product", record["event"])


def test_a_planner_daemon_notes_where_its_product_event_went(tmp_path):
    work = tmp_path / "work"
    publisher = Publisher(_Producer(), Topics(), Metrics(), role="planner+detector1",
                          work_dir=work)
    event = _product(tmp_path)
    anyio.run(publisher.publish, "products", "01234", event)
    assert product_events_place(work).newest() == {
        "event_id": event.event_id, "topic": Topics().name("products"), "partition": 0,
        "offset": 0}
    # Its planner's own publisher (another producer) keeps the same note.
    assert publisher.with_producer(_Producer()).product_place is publisher.product_place


def test_a_daemon_without_the_planner_role_notes_none(tmp_path):
    work = tmp_path / "work"
    publisher = Publisher(_Producer(), Topics(), Metrics(), role="detector1", work_dir=work)
    anyio.run(publisher.publish, "products", "01234", _product(tmp_path))
    assert product_events_place(work).newest() is None


class _PartitionedProducer(_Producer):
    """As _Producer, but its first record goes to partition 2 and the rest
    to partition 0: a products topic of several partitions (keyed by program)."""

    async def send(self, topic, value, key):
        await super().send(topic, value, key)
        answered = asyncio.get_running_loop().create_future()
        partition = 2 if len(self.sent) == 1 else 0
        answered.set_result(RecordMetadata(topic, partition, TopicPartition(topic, partition),
                                           0, -1, 0, 0))
        return answered


def test_a_loss_of_one_partition_only_is_seen(tmp_path, monkeypatch):
    """A broker that lost one partition of the products topic and kept the
    others (a Kafka node that alone held it, restored from an old disk; the
    supervisor says 'partition end(s) went back'). Only the newest event's
    place was noted, on a partition that kept it: judged not lost, and the
    events of the lost partition were never put back."""
    work, store = tmp_path / "work", ProductStore(tmp_path / "products")
    _, first = publish(store)
    _, second = publish(store.for_namespace("r1"), work_id="b" * 64)
    publisher = Publisher(_PartitionedProducer(), Topics(), Metrics(), role="planner",
                          work_dir=work)
    for record in (first, second):  # as the runs sent them
        anyio.run(publisher.publish, "products", "01234",
                  contract.Message("product", record["event"]))
    topic = Topics().name("products")
    # The broker as the loss left it: partition 0 holds the second, partition 2 nothing.
    kept = SimpleNamespace(topic=topic, partition=0, offset=0, value=contract.encode(
        contract.Message("product", second["event"])))
    answers = {(topic, 0, 0): kept, (topic, 2, 0): record_places.GONE}

    async def records_at(cfg, places, timeout=10.0):
        return {p: answers[p] for p in places}

    async def record_at(cfg, name, partition, offset, timeout=10.0):
        return answers[name, partition, offset]

    async def on_topic(cfg, name, kind):
        return {second["event"]["event_id"]: kept}

    monkeypatch.setattr(kafka, "records_at", records_at)
    monkeypatch.setattr(kafka, "record_at", record_at)
    monkeypatch.setattr(broker_recovery, "_on_topic", on_topic)

    async def described(cfg, name, why):  # the broker's metadata has the topic
        pass

    monkeypatch.setattr(kafka, "require_described", described)
    cfg = Config(work_dir=work, products=store.root, roles=("planner",))
    publisher.producer.sent.clear()
    anyio.run(broker_recovery.recover_product_events, cfg, Topics(), store, publisher)
    assert [m["event_id"] for _, m in publisher.producer.sent] == [first["event"]["event_id"]]
