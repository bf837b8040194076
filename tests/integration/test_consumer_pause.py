"""A stage consumer with every slot taken fetches nothing (real tansu).

While its runs fill its capacity, nothing it could fetch can be taken: live
records wait behind the runs and replayed ones are pulled only into free
slots. So every partition, live and replay, is paused, and the broker
answers no idle fetches beside the runs (each costs tansu ~2 ms of CPU,
bench/README.md session 16). When a run ends the partitions are resumed, and
a replayed record sent meanwhile is taken then.
"""

from __future__ import annotations

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.operations.metrics import Metrics
from calstream.topics.catalog import Topics

from .support import daemon_config, until

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_full_consumer_pauses_live_and_replay_and_resumes_when_a_slot_frees(
        tmp_path, broker, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    live, replay = topics.name("raw"), topics.name("replay")
    release, taken = anyio.Event(), []

    async def handler(record) -> None:
        taken.append((record.topic, record.key))
        if record.topic == live:
            await release.wait()  # a run holding the only slot

    consumer = kafka.group_consumer(cfg, f"{unique_prefix}pause", 100)
    await consumer.start()
    loop = kafka.ConcurrentConsumer(consumer, stage="detector1", handler=handler, capacity=1,
                                    metrics=Metrics(), topics=[live], low_priority=[replay])
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(loop.run)
            await until(lambda: len(consumer.assignment()) == 8)
            await producer.send_and_wait(live, b"{}", key=b"live-1")
            await until(lambda: taken == [(live, b"live-1")])
            # Full: every assigned partition paused, the replay ones too.
            await until(lambda: consumer.paused() == consumer.assignment())
            await producer.send_and_wait(replay, b"{}", key=b"replay-1")
            await anyio.sleep(1.0)  # ten fetch waits: nothing may be taken while full
            assert taken == [(live, b"live-1")]
            release.set()
            await until(lambda: (replay, b"replay-1") in taken)
            await until(lambda: not consumer.paused())
            tg.cancel_scope.cancel()
    finally:
        await producer.stop()
        await consumer.stop()
