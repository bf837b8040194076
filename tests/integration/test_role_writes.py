"""A daemon's publisher writes only what its roles are granted
(daemon/deciders/broker_access.py), on a broker without ACLs as a broker
with calstream's ACLs would have it."""

from __future__ import annotations

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from calstream.daemon.doers import kafka
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import daemon_config, read_all

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_stage_s_publisher_cannot_write_a_work_order(tmp_path, broker, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    topics = Topics(unique_prefix)
    await kafka.create_topics(cfg, topics)
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        stage = kafka.Publisher(producer, topics, Metrics(), role="stage2")
        forged = contract.Message("work_order", {"event_id": "forged"})
        with pytest.raises(TopicAuthorizationFailedError, match="work.stage2"):
            await stage.publish("work.stage2", "k", forged)
        with pytest.raises(TopicAuthorizationFailedError, match="holds"):
            await stage.publish("holds", "k", forged)
        # What it is granted goes through.
        await stage.dead_letter(category="invalid_message", reason="a test", stage="stage2",
                                key="k")
        # A publisher that is not a daemon's (a tool's) is not limited here.
        assert kafka.Publisher(producer, topics, Metrics()).granted is None
    finally:
        await producer.stop()
    assert await read_all(cfg, ["work.stage2", "holds"], timeout=5) == []
    assert len(await read_all(cfg, ["deadletter"], timeout=10)) == 1
