"""A broker that lost its product events gets them all again from the product
store, even when the re-publishing is cut off part-way.

The daemon with the planner role re-publishes the store's events when the
products topic is empty. Here the broker (a real tansu of the test's own)
stops answering (SIGSTOP) after the second of six events: the start waits
for it, and once it answers again, every event is on the topic, whether the
same start goes on or the daemon was stopped and a new one starts. (Before
the fix, the topic was no longer empty, so the rest was skipped: four
events were lost to the planner for good.) The daemon's own embedded broker
killed during that start is started again by the start itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.broker_recovery import marker_path, recover_product_events
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.kafka.publisher import Publisher
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.recovery_reads import every_record
from calstream.daemon.operations.metrics import Metrics
from calstream.daemon.runtime import Daemon
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import BROKER_TIMEOUT, daemon_config, products, read_all, until
from .test_planner_ha import product_event, publish
from .test_start_heal import get

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

EVENTS, CUT_AFTER = 6, 2


def stored_events(cfg) -> set[str]:
    """Six detector1 products in the store, as their runs left them."""
    store = ProductStore(cfg.products)
    ids = set()
    for n in range(1, EVENTS + 1):
        e = product_event(cfg.products, cfg.inbox, 1234, n, EVENTS)
        store.write_record(e["program"], e["observation"], name=e["product_name"],
                           stage="detector1", record={"work_id": e["work_id"], "event": e.body})
        ids.add(e["event_id"])
    return ids


def in_the_store(cfg, event):
    """``event``'s provenance record in the store, as its run left it before sending it."""
    ProductStore(cfg.products).write_record(
        event["program"], event["observation"], name=event["product_name"], stage="detector1",
        record={"work_id": event["work_id"], "event": event.body})
    return event


async def waiting_for_the_broker(daemon: Daemon) -> None:
    """Until /readyz says the start waits for the broker to take the events."""
    with anyio.fail_after(120):
        while True:
            if daemon.ops is not None:
                code, body = await anyio.to_thread.run_sync(get, daemon.ops.address, "/readyz")
                if code == 503 and any("waiting for the broker" in p and "broker_unreachable"
                                       in p for p in json.loads(body)["problems"]):
                    return
            await anyio.sleep(0.2)


async def started(daemon: Daemon) -> None:
    with anyio.fail_after(120):
        while not daemon.start_waits.done:
            await anyio.sleep(0.2)


@pytest.mark.parametrize("then", ["same_start", "next_start"])
async def test_republishing_cut_off_part_way_is_done_whole(tmp_path, unique_prefix, monkeypatch,
                                                           then):
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"],
                            max_attempts=2, retry_backoff=0.1, park_recheck_seconds=1.0,
                            **BROKER_TIMEOUT)
        wanted = stored_events(cfg)
        sent: list[str] = []
        send = Publisher.send  # the re-publishing sends them together (publish_all)

        async def send_then_lose_the_broker(self, logical_topic, key, message):
            answer = await send(self, logical_topic, key, message)
            if logical_topic == "products":
                sent.append(message["event_id"])
                if len(sent) == CUT_AFTER:  # the broker stops answering here
                    os.kill(own.process.pid, signal.SIGSTOP)
            return answer

        monkeypatch.setattr(Publisher, "send", send_then_lose_the_broker)
        try:
            daemon = Daemon(cfg)
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                await waiting_for_the_broker(daemon)
                if then == "next_start":
                    tg.cancel_scope.cancel()  # stopped part-way (SIGTERM, a node lost)
                os.kill(own.process.pid, signal.SIGCONT)
                if then == "same_start":
                    await started(daemon)
                    tg.cancel_scope.cancel()
            if then == "next_start":
                daemon = Daemon(cfg)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(daemon.run)
                    await started(daemon)
                    tg.cancel_scope.cancel()
        finally:
            os.kill(own.process.pid, signal.SIGCONT)
        on_topic = {p["event_id"] for p in products(await read_all(cfg, ["products"]))}
    assert len(set(sent[:CUT_AFTER])) == CUT_AFTER  # it was cut off after two
    assert on_topic == wanted, f"{len(on_topic)} of {len(wanted)} events on the topic"
    assert not marker_path(cfg.work_dir).exists()


async def test_the_embedded_broker_killed_during_the_start_is_started_again(
        tmp_path, unique_prefix, monkeypatch):
    """The daemon's own tansu dies (SIGKILL, an OOM) while the start
    re-publishes: its supervisor runs only once the daemon has started, so
    the start itself starts it again, makes its topics, and re-publishes the
    whole store. (Before: the start waited for the dead broker for ever.)"""
    cfg = daemon_config(tmp_path, None, unique_prefix, roles=["planner"], max_attempts=2,
                        retry_backoff=0.1, park_recheck_seconds=1.0, **BROKER_TIMEOUT)
    wanted = stored_events(cfg)
    daemon = Daemon(cfg)
    daemon.start_broker()
    killed: list[int] = []
    send = Publisher.send  # the re-publishing sends them together (publish_all)

    async def send_then_kill_the_broker(self, logical_topic, key, message):
        answer = await send(self, logical_topic, key, message)
        if logical_topic == "products" and not killed:
            killed.append(daemon.broker.process.pid)
            os.kill(daemon.broker.process.pid, signal.SIGKILL)
        return answer

    monkeypatch.setattr(Publisher, "send", send_then_kill_the_broker)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            await started(daemon)
            assert daemon.broker.alive() and daemon.broker.process.pid != killed[0]
            # The start is done; the planner then catches up with its history
            # (a transient problem on /readyz), after which it must be ready.
            with contextlib.suppress(TimeoutError):
                await until(lambda: daemon.readiness()[0], timeout=60)
            ready, problems = daemon.readiness()
            tg.cancel_scope.cancel()
        on_topic = {p["event_id"] for p in products(await read_all(daemon.cfg, ["products"]))}
    finally:
        daemon.stop_broker()
    assert ready, problems
    assert on_topic == wanted, f"{len(on_topic)} of {len(wanted)} events on the topic"


async def test_an_event_sent_before_the_rebuild_looks_does_not_hide_the_loss(
        tmp_path, unique_prefix, monkeypatch):
    """The daemon's own tansu (memory storage) dies and is started again
    empty. A run that ended meanwhile sends its product event the moment
    the rebuild has made the topics, before the rebuild looks whether the
    products topic is empty: it was not, so the store's events were not
    re-published and were lost to the planner and every reader. A broker
    started again on memory lost them whatever it holds by then; the one
    it holds (its run recorded it in the store too) is not sent twice."""
    cfg = daemon_config(tmp_path, None, unique_prefix, roles=["planner"], max_attempts=2,
                        retry_backoff=0.1, park_recheck_seconds=1.0, **BROKER_TIMEOUT)
    wanted = stored_events(cfg)
    racer = in_the_store(cfg, product_event(cfg.products, cfg.inbox, 1234, EVENTS + 1,
                                            EVENTS + 1))
    daemon = Daemon(cfg)
    daemon.start_broker()
    restarted: list[bool] = []
    make = kafka.create_topics

    async def make_then_a_run_ends(cfg, topics, **options):
        made = await make(cfg, topics, **options)
        if restarted:
            await publish(cfg, [racer])
        return made

    monkeypatch.setattr(kafka, "create_topics", make_then_a_run_ends)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            await started(daemon)
            restarted.append(True)
            os.kill(daemon.broker.process.pid, signal.SIGKILL)
            await until(lambda: daemon.supervisor.last_recovery is not None, timeout=60)
            tg.cancel_scope.cancel()
        on_topic = [p["event_id"] for p in products(await read_all(daemon.cfg, ["products"]))]
    finally:
        daemon.stop_broker()
    assert daemon.supervisor.restarts == 1
    assert sorted(on_topic) == sorted(wanted | {racer["event_id"]}), \
        f"{len(set(on_topic) & wanted)} of {len(wanted)} stored events on the topic, " \
        f"{len(on_topic)} records"


async def test_an_external_broker_back_without_them_gets_each_once_whatever_came_first(
        tmp_path, unique_prefix, monkeypatch):
    """An external broker (a tansu of the test's own, on memory) comes back
    empty: restored from an old disk, a topic made again. A run that ended
    meanwhile sends its product event before the recovery looks: the topic
    was "not empty", so none of the store's events were put back (1 of 7 on
    the topic). The place noted for the newest event sent no longer holds
    it: each event the topic lacks is put back, and the one it has is not
    sent twice."""
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"],
                            max_attempts=2, retry_backoff=0.1, park_recheck_seconds=1.0,
                            **BROKER_TIMEOUT)
        wanted = stored_events(cfg)
        racer = in_the_store(cfg, product_event(cfg.products, cfg.inbox, 1234, EVENTS + 1,
                                                EVENTS + 1))
        back: list[bool] = []
        make = kafka.create_topics

        async def make_then_a_run_ends(cfg, topics, **options):
            made = await make(cfg, topics, **options)
            if back and len(back) == 1:
                back.append(True)
                await publish(cfg, [racer])  # its run ended while the broker was away
            return made

        monkeypatch.setattr(kafka, "create_topics", make_then_a_run_ends)
        daemon = Daemon(cfg)
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            await started(daemon)
            before = [p["event_id"] for p in products(await read_all(cfg, ["products"]))]
            own.stop()
            await anyio.sleep(3)  # lost to the probe
            back.append(True)
            own.start()
            await until(lambda: len(back) == 2 and daemon.supervisor._back_owed is None
                        and daemon.supervisor.health.lost_since is None, timeout=60)
            tg.cancel_scope.cancel()
        on_topic = [p["event_id"] for p in products(await read_all(cfg, ["products"]))]
    assert sorted(before) == sorted(wanted | {racer["event_id"]})
    assert sorted(on_topic) == sorted(wanted | {racer["event_id"]}), \
        f"{len(set(on_topic) & wanted)} of {len(wanted)} stored events on the topic"


async def test_a_topic_an_admin_has_not_made_again_holds_back_only_its_own(
        tmp_path, unique_prefix):
    """A site whose admin makes the topics (``create_topics = false``): the
    external broker comes back empty, and the admin makes every topic again
    but one the planner does not use. Every try of putting back what was
    lost stopped at that topic (TopicsMissing), and the product events,
    whose topic was there, were never put back (0 of 6)."""
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"],
                            create_topics=False, max_attempts=2, retry_backoff=0.1,
                            park_recheck_seconds=1.0, **BROKER_TIMEOUT)
        wanted = stored_events(cfg)
        topics = Topics(cfg.topic_prefix)
        await kafka.create_topics(cfg, topics)  # the admin
        daemon = Daemon(cfg)
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            await started(daemon)
            own.stop()
            await anyio.sleep(3)  # lost to the probe
            own.start()
            # The admin again, all but one.
            await kafka.create_topics(cfg, Topics(cfg.topic_prefix, specs=tuple(
                s for s in topics.specs if s.logical != "promotions")))
            with contextlib.suppress(TimeoutError):
                await until(lambda: daemon.supervisor._back_failures >= 1, timeout=60)
                with anyio.fail_after(30):
                    while len(products(await read_all(cfg, ["products"]))) < EVENTS:
                        await anyio.sleep(0.5)
            tg.cancel_scope.cancel()
        on_topic = [p["event_id"] for p in products(await read_all(cfg, ["products"]))]
    assert sorted(on_topic) == sorted(wanted), f"{len(on_topic)} of {len(wanted)} on the topic"


async def test_a_planner_that_never_re_published_still_sees_the_loss(tmp_path, unique_prefix):
    """The planner's own daemon (a deployment of one role each) sends no
    product event: the stages' daemons do. At its start the topic already
    held them, so nothing was re-published and no place was noted; the
    recovery judged by the topic being empty, and one event a run sent once
    the external broker came back empty hid the loss of all six others (1
    of 7 on the topic). A place found on the topic at that start (its last
    record) is noted instead, and judges the loss."""
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"],
                            **BROKER_TIMEOUT)
        topics, store = Topics(cfg.topic_prefix), ProductStore(cfg.products)
        wanted = stored_events(cfg)
        await kafka.create_topics(cfg, topics)
        await publish(cfg, [contract.Message("product", r["event"])  # the stages' runs
                             for r in every_record(store)])
        racer = in_the_store(cfg, product_event(cfg.products, cfg.inbox, 1234, EVENTS + 1,
                                                EVENTS + 1))
        producer = kafka.producer(cfg)
        await producer.start()
        try:
            publisher = Publisher(producer, topics, Metrics(), role="planner",
                                  work_dir=cfg.work_dir)
            await recover_product_events(cfg, topics, store, publisher)  # the planner's start
            own.stop()  # an external broker back empty (restored, the topic made again)
            own.start()
            await kafka.create_topics(cfg, topics)
            await publish(cfg, [racer])  # a run that ended while it was away
            await recover_product_events(cfg, topics, store, publisher)  # once it is back
        finally:
            await producer.stop()
        on_topic = [p["event_id"] for p in products(await read_all(cfg, ["products"]))]
    assert sorted(on_topic) == sorted(wanted | {racer["event_id"]}), \
        f"{len(set(on_topic) & wanted)} of {len(wanted)} stored events on the topic"
