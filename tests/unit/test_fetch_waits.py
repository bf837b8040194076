"""Each stage's consumer holds an idle fetch as long as its stage says.

An idle fetch costs tansu ~2 ms of CPU whatever the wait (bench/README.md,
session 16), so only the arrival hop, which is in every exposure's fixed
cost, fetches every 100 ms; the stages behind the planner use Kafka's 500.
"""

from __future__ import annotations

import asyncio

from calstream.daemon.doers import kafka
from calstream.daemon.doers.kafka.clients import FETCH_MAX_WAIT_MS
from calstream.daemon.operations.config import Config
from calstream.daemon.stages import STAGES, stage


def _consumer_wait(st) -> int:
    async def build() -> int:  # aiokafka's consumer wants a running loop
        cfg = Config(kafka_bootstrap="127.0.0.1:1")
        consumer = kafka.group_consumer(cfg, st.group(cfg.group_prefix), st.fetch_wait_ms)
        return consumer._fetch_max_wait_ms
    return asyncio.run(build())


def test_each_stage_consumer_fetches_with_its_stage_wait():
    assert {st.name: _consumer_wait(st) for st in STAGES} == \
        {"detector1": 100, "stage2": 500, "stage3": 500}


def test_the_arrival_hop_keeps_the_short_wait_of_observers():
    # Subscribers and read_topics see a product as soon as a stage would.
    assert stage("detector1").fetch_wait_ms == FETCH_MAX_WAIT_MS == 100
