"""How far behind the planner is: what its topic reader has left to read
(``TopicReader.behind``), which the planner exports once a second as
``calstream_planner_lag_records`` and in /planner ("behind"); a planner that
cannot keep up shows a lag that grows (the CalstreamPlannerFallingBehind
alert). On the embedded broker, whose high watermarks come from the fetch
responses (its end offsets are wrong: notes/kafka-broker.md)."""

from __future__ import annotations

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.kafka.topic_reader import open_reader
from calstream.topics.catalog import Topics

from .support import daemon_config

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_what_the_reader_has_left_is_what_its_fetches_did_not_return(
        tmp_path, broker, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    products, pointing = topics.name("products"), topics.name("pointing")
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for n in range(40):  # over the topic's partitions, by key
            await producer.send(products, b"{}", key=b"program-%d" % n)
        await producer.flush()
    finally:
        await producer.stop()

    async with open_reader(cfg, [products, pointing]) as reader:
        read = []
        with anyio.fail_after(30):
            while not read or None in reader.high_watermarks().values():
                read += await reader.fetch(max_records=5)
        assert 0 < len(read) < 40
        assert await reader.behind() == {products: 40 - len(read), pointing: 0}
        assert await reader.behind({pointing}) == {pointing: 0}
        with anyio.fail_after(30):
            while len(read) < 40:
                read += await reader.fetch()
        assert await reader.behind() == {products: 0, pointing: 0}
