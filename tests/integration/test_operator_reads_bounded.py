"""`calstream holds list` and `plan list` on topics of months (no daemon).

tansu never compacts the holds topic, and a plan loaded again is one more
record on the plans topic: both commands read their topic whole into
memory, every record of every week. Now each folds its topic as it reads
it, keeping the last hold of each exposure (as compaction would) and each
plan once. Measured with tracemalloc: what Python allocated at its peak
while the command read, against the bytes of the topic."""

from __future__ import annotations

import tracemalloc

import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.operations.cli.plans import loaded_plans
from calstream.daemon.operations.config import load
from calstream.daemon.operations.holds_view import current_holds
from calstream.topics import contract
from calstream.topics.catalog import Topics

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
HELD = "jw01234001001_02101_00001_nrcb1"
RECORDS = 6_000
REASON = "ENGQLPTG=PLANNED " + "x" * 4_000  # ~4 kB a record: ~26 MB of topic


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _many(cfg, topic: str, records: list[tuple[str, contract.Message]]) -> int:
    """Sent without waiting for each acknowledgement (fast); their bytes."""
    producer = kafka.producer(cfg)
    await producer.start()
    size = 0
    try:
        for key, message in records:
            value = contract.encode(message)
            size += len(value)
            await producer.send(topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return size


async def _peak(read) -> tuple[object, int]:
    tracemalloc.start()
    try:
        found = await read()
        return found, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.anyio
async def test_holds_list_keeps_the_last_hold_of_each_exposure_not_the_whole_topic(
        broker, unique_prefix, tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    holds = [(HELD, contract.build("hold", contract.event_id("hold", HELD, str(n)),
                                   exposure_id=HELD, program="01234", state="held",
                                   reason=f"{REASON} {n}", since=contract.utc_now(),
                                   digest="sha256:" + "ab" * 32)) for n in range(RECORDS)]
    size = await _many(cfg, topics.name("holds"), holds)

    (rows, _), peak = await _peak(lambda: current_holds(cfg, topics))
    assert list(rows) == [HELD] and rows[HELD]["reason"] == f"{REASON} {RECORDS - 1}"
    # Read whole, the peak was about twice the topic's bytes; folded, about
    # two fetches of 1 MiB and what decoding them takes (5.5 MB measured).
    assert peak < size / 3, (peak >> 20, size >> 20)


@pytest.mark.anyio
async def test_plan_list_keeps_each_plan_once_not_the_whole_topic(broker, unique_prefix,
                                                                 tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    exposures = [{"exposure_id": f"jw01234001001_02101_{n:05d}_nrcb1",
                  "candidates": ["o001"]} for n in range(1, 80)]
    plan = contract.build("plan", contract.event_id("plan", "p1"), plan_id="ab" * 32,
                          source="pool.csv", by="tester", programs=["01234"],
                          exposures=exposures)
    size = await _many(cfg, topics.name("plans"), [("01234", plan)] * RECORDS)

    plans, peak = await _peak(lambda: loaded_plans(cfg))
    assert [p["plan_id"] for p in plans] == ["ab" * 32]
    assert peak < size / 3, (peak >> 20, size >> 20)
