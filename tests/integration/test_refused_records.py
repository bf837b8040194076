"""A record the broker refuses for what it is (deciders/broker_refusals.py)
is a dead letter with the reason, counted, and its sender goes on: never
sent again and again. The embedded broker refuses nothing by size (tansu
0.6 ignores ``max.message.bytes``), so the refusal here is the producer's
own size check (``max_request_size``), which raises the same error,
MESSAGE_TOO_LARGE (code 10), that a Kafka topic whose ``max.message.bytes``
is below calstream's own limit answers. A real broker, real worker
processes, a real product store."""

from __future__ import annotations

import logging

import anyio
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownTopicOrPartitionError

from calstream.daemon.deciders.log_floods import FloodWindows
from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers import kafka
from calstream.daemon.doers.broker_recovery import recover_product_events
from calstream.daemon.doers.kafka import clients
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.recovery_reads import every_record
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations import logs
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract, dead_letters
from calstream.topics.catalog import Topics

from .support import daemon_config, read_all
from .test_planner_ha import publish
from .test_product_event_recovery import stored_events

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

LIMIT = 6000  # bytes a record may have here: a dead letter fits, a long event does not
NAME = "jw01234001001_02101_00001_nrcb1"


async def _publisher(cfg, topics: Topics, metrics: Metrics):
    await kafka.create_topics(cfg, topics)
    producer = AIOKafkaProducer(**clients.client_options(cfg), acks="all",
                                max_request_size=LIMIT)
    await producer.start()
    return producer, kafka.Publisher(producer, topics, metrics)


def _item() -> WorkItem:
    return WorkItem(stage="detector1", pipeline="calwebb_detector1",
                    task="tests.pool_tasks:write_rate_with_a_long_parameter",
                    task_kwargs={"name": NAME, "length": 2 * LIMIT},
                    program="01234", observation="001", name=NAME,
                    inputs=[{"path": "/in/u.fits", "digest": "sha256:" + "0" * 64}],
                    event_fields={"exposure_id": NAME})


def _id(n: int) -> str:
    return contract.event_id("dead_letter", "a test", n)


def _letter(n: int, path_length: int) -> contract.Message:
    return contract.build("dead_letter", _id(n), **dead_letters.letter_fields(
        category="bad_file", reason="a test", stage="watcher", attempts=0, original=None,
        path="/inbox/" + "p" * path_length, quarantined_to="/q/" + "q" * path_length))


async def test_a_product_event_the_broker_refuses_is_a_dead_letter_not_a_record_retried_for_ever(
        tmp_path, broker, unique_prefix):
    """Before: the refusal was neither the encoding's nor the broker's fault
    to the runner: raised out of the run (and the re-emission of an item
    found done), its stage's consumer took the record again for as long as
    the daemon ran, parked ``unknown``."""
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    metrics, topics = Metrics(), Topics(unique_prefix)
    producer, publisher = await _publisher(cfg, topics, metrics)
    pool = WorkerPool(1, stage="detector1", metrics=metrics)
    pool.start()
    runner = WorkItemRunner(cfg, publisher=publisher, store=ProductStore(cfg.products),
                            pool=pool, metrics=metrics, crds_context="jwst_0001.pmap")
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            await runner.run(_item())  # run, committed, its event refused
            await runner.run(_item())  # its record redelivered: found done, re-emitted
    finally:
        pool.close()
        await producer.stop()
    letters = await read_all(cfg, ["deadletter"], timeout=10)
    assert [(m["category"], m["stage"]) for m in letters] == [
        ("permanent_failure", "detector1")] * 2
    assert all("MESSAGE_TOO_LARGE" in m["reason"] and "products" in m["reason"]
               for m in letters), [m["reason"] for m in letters]
    assert await read_all(cfg, ["products"], timeout=3) == []
    assert metrics.records_refused.labels(topic="products",
                                          code="MESSAGE_TOO_LARGE")._value.get() == 2
    # One outcome a run: the fresh run's refused event made it "failed", not
    # "success" too (before session 45), and the re-emission's "failed".
    runs = {o: metrics.stage_runs.labels(stage="detector1", pipeline="calwebb_detector1",
                                         outcome=o)._value.get() for o in ("success", "failed")}
    assert runs == {"success": 0, "failed": 2}


async def test_a_dead_letter_the_broker_refuses_is_said_and_counted_and_the_sender_goes_on(
        tmp_path, broker, unique_prefix, caplog):
    """A letter about the refused letter would be refused alike: no loop,
    and no exception out of ``dead_letter`` (it ended the planner's task,
    and parked a stage's record ``unknown`` for ever)."""
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    metrics, topics = Metrics(), Topics(unique_prefix)
    producer, publisher = await _publisher(cfg, topics, metrics)
    try:
        with anyio.fail_after(60):
            await publisher.dead_letter(category="bad_file", reason="a test", stage="watcher",
                                        key="big", path="/inbox/" + "p" * 4000,
                                        quarantined_to="/q/" + "q" * 4000)
            await publisher.dead_letter(category="bad_file", reason="a test", stage="watcher",
                                        key="small", path="/inbox/small.fits")
            # Put back together (broker_recovery.py): the refused one left
            # out, the others sent; before, the whole set was raised and
            # sent again at every try.
            placed: list = []
            sent = await publisher.unkept().publish_all(
                [("deadletter", f"k{n}", _letter(n, 10 if n != 1 else LIMIT)) for n in range(3)],
                placed)
    finally:
        await producer.stop()
    assert sent == 2 and placed[1] is None and all(p is not None for p in placed[::2])
    on_topic = await read_all(cfg, ["deadletter"], timeout=10)
    assert sorted(m.event_id for m in on_topic if m["path"] != "/inbox/small.fits") == sorted(
        [_id(0), _id(2)])
    assert len(on_topic) == 3  # and "small"
    assert metrics.records_refused.labels(topic="deadletter",
                                          code="MESSAGE_TOO_LARGE")._value.get() == 2
    assert metrics.dead_letters.labels(stage="watcher", category="bad_file")._value.get() == 1
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("dead letter [watcher/bad_file] big not sent" in line for line in said), said


async def test_a_topic_the_broker_s_metadata_leaves_out_is_not_judged_to_have_lost_its_records(
        tmp_path, broker, unique_prefix):
    """A broker erroring for one topic (a leader being elected, a Describe ACL
    missing: Kafka leaves out what a principal may not describe) answers its
    metadata without it. The recovery judged such a topic by its absence: the
    record at its noted place GONE, the topic read as empty, and every
    product event of the store sent to it again once it answered (with a
    Describe ACL missing, at every start). tansu errors for no topic: one
    deleted after the topics were made stands in for it, as the recovery
    sees only the metadata. Now the check waits for an answer about it (a
    broker fault: the start step, or the supervisor, tries again)."""
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"])
    topics, store = Topics(unique_prefix), ProductStore(cfg.products)
    stored_events(cfg)
    await kafka.create_topics(cfg, topics)
    await publish(cfg, [contract.Message("product", r["event"]) for r in every_record(store)])
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        publisher = kafka.Publisher(producer, topics, Metrics(), role="planner",
                                    work_dir=cfg.work_dir)
        await recover_product_events(cfg, topics, store, publisher)  # notes where they are
        admin = kafka.admin(cfg)
        await admin.start()
        try:
            await admin.delete_topics([topics.name("products")])
        finally:
            await admin.close()
        with pytest.raises(UnknownTopicOrPartitionError, match="leaves out"):
            await recover_product_events(cfg, topics, store, publisher)
    finally:
        await producer.stop()


async def test_refused_records_lines_are_flood_controlled_as_a_poison_stream_s_letters(
        tmp_path, broker, unique_prefix):
    """A poison stream whose letters the ``deadletter`` topic refuses (long
    forged paths, over its ``max.message.bytes``) made one ERROR line per
    record, never left out (errors are not flood-controlled unless marked a
    data fault), where the letters it did send made 20 a minute and a
    summary; so did each refused record put back after a loss. Now both are
    data faults' lines: the first of a window written, the rest summarised
    (the metric and the ledger keep every one)."""
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    metrics, topics = Metrics(), Topics(unique_prefix)
    out, now = [], [1000.0]
    handler = logging.Handler()
    handler.emit = out.append
    handler.addFilter(logs.FloodControl(handler, FloodWindows(3, 60.0, 1000),
                                        clock=lambda: now[0]))
    publisher_log = logging.getLogger("calstream.publisher")
    publisher_log.addHandler(handler)
    producer, publisher = await _publisher(cfg, topics, metrics)
    try:
        with anyio.fail_after(60):
            for n in range(8):
                await publisher.dead_letter(category="bad_file", reason="a test",
                                            stage="watcher", key=f"big{n}",
                                            path="/inbox/" + "p" * 4000,
                                            quarantined_to="/q/" + "q" * 4000)
            await publisher.unkept().publish_all(
                [("deadletter", f"k{n}", _letter(n, LIMIT)) for n in range(8)])
    finally:
        publisher_log.removeHandler(handler)
        await producer.stop()
    assert metrics.records_refused.labels(topic="deadletter",
                                          code="MESSAGE_TOO_LARGE")._value.get() == 16
    not_sent = [r for r in out if "not sent (event" in r.getMessage()]
    left_out = [r for r in out if "left out, not sent again" in r.getMessage()]
    assert (len(not_sent), len(left_out)) == (3, 3), [r.getMessage()[:80] for r in out]
