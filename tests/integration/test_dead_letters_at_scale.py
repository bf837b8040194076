"""`calstream deadletters list|show` on a deadletter topic of many letters
reads what it shows, not the topic (the embedded broker, real records).

The topic keeps months of letters; `list` read every one before printing the
first. Here a few hundred letters are written fast with a producer, and what
the reading fetched is counted (``Loaded.records_read``), not timed.
"""

from __future__ import annotations

import json
import time

import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.operations.cli.dead_letter_reading import load, named_letters
from calstream.topics import contract
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import REDRIVE_HEADER, original_record, redrive_marks

from .support import cli, daemon_config

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

LETTERS = 600


def letter(i: int, stage: str = "detector1") -> bytes:
    message = contract.build(
        "dead_letter", contract.event_id("dead_letter", "test", str(i)),
        category="permanent_failure", reason=f"failure number {i}", stage=stage, attempts=1,
        exposure_id=f"jw{i:05d}", original=original_record(
            topic="x.raw", partition=0, offset=i, key=f"jw{i:05d}".encode(),
            value=b"{}", timestamp_ms=None))
    return contract.encode(message)


async def write(cfg, values: list[bytes]) -> None:
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        name = Topics(cfg.topic_prefix).name("deadletter")
        start = int(time.time() * 1000) - len(values)
        for i, value in enumerate(values):  # a millisecond apart: their order is known
            await producer.send(name, value, key=b"k", partition=i % 2,
                                timestamp_ms=start + i)
        await producer.flush()
    finally:
        await producer.stop()


async def test_list_reads_a_window_from_the_end_not_the_topic(tmp_path, broker, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    values = [letter(i, stage="stage2" if i % 100 == 0 else "detector1")
              for i in range(LETTERS)]
    values.append(letter(LETTERS - 1))  # the newest emitted again: one letter, two places
    await write(cfg, values)
    topics = Topics(cfg.topic_prefix)

    newest = await load(cfg, topics, limit=5)
    assert [x.body["reason"] for x in newest.letters] == [
        f"failure number {i}" for i in range(LETTERS - 1, LETTERS - 6, -1)]
    assert len(newest.letters[0].copies) == 1  # its earlier place, read in the same window
    assert newest.records_read <= 4 * 50  # a window or two per partition, not 601 records
    assert newest.cut == "limit" and newest.older >= LETTERS - newest.records_read

    # A filter reads back only until it has --limit letters that pass it.
    stage2 = await load(cfg, topics, limit=2,
                        keep=lambda x: x.body["stage"] == "stage2")
    assert [x.body["reason"] for x in stage2.letters] == ["failure number 500",
                                                          "failure number 400"]
    assert stage2.records_read <= 6 * 50 < LETTERS  # back to letter 400, not further

    # One place is read where it is; an event id prefix is looked for.
    place = newest.letters[3].ref
    (shown,), problems = await named_letters(cfg, topics, [place, "ff" * 40])
    assert shown.ref == place and problems[0].startswith("no dead letter is ffff")

    done = cli(cfg, "deadletters", "list", "--limit", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 + 3 + 1 and "more older record(s)" in lines[-1]
    assert "failure number 599" in lines[3]  # the newest next to the prompt
    whole = cli(cfg, "deadletters", "list", "--limit", "0", "--stage", "stage2", "--json")
    assert [x["reason"] for x in json.loads(whole.stdout)] == [
        f"failure number {i}" for i in range(0, LETTERS, 100)]


async def test_a_forged_original_offset_beyond_the_end_reads_no_whole_partition(
        tmp_path, broker, unique_prefix):
    """The redrive marks of a letter are read on its original's partition from
    the original on. An offset beyond the partition's end was taken for a
    topic recreated since, and the partition read from its beginning: a forged
    letter (``offset: 10**15``) made every `list` and console look read a
    whole partition of months. Only a bounded tail is read for it now."""
    from calstream.daemon.deciders.redrive_reading import LOST_TAIL
    from calstream.daemon.operations.dead_letter_redrives import RedriveReading

    cfg = daemon_config(tmp_path, broker, unique_prefix)
    topics = Topics(cfg.topic_prefix)
    records = 3 * LOST_TAIL
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for _ in range(records):
            await producer.send(topics.name("raw"), b"{}", key=b"k", partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    forged = {"event_id": "f" * 64, "original": {
        "topic": topics.name("raw"), "partition": 0, "offset": 10**15, "key": "k",
        "value": "{}"}}
    reading = RedriveReading()
    await reading.update(cfg, topics, [forged])
    assert 0 < reading.records_read <= LOST_TAIL < records
    # Where it read to is its own, trusted: the next look reads on from there.
    await reading.update(cfg, topics, [forged])
    assert reading.records_read <= LOST_TAIL


async def test_a_redrive_puts_the_letter_back_with_its_mark_where_the_planner_reads(
        tmp_path, broker, unique_prefix):
    """A redrive re-sent the original to its work topic only, which the
    planner does not follow: the member of a redriven stage-2 order stayed
    "failed", and its candidate closed degraded on the quiet period while
    the order ran again. The redrive now also puts the dead letter back on
    the deadletter topic with its mark (as a daemon does after a broker
    loss), and the planner's reading of it counts the order in flight."""
    from calstream.daemon.deciders.stage2_failures import stage2_failure

    cfg = daemon_config(tmp_path, broker, unique_prefix)
    topics = Topics(cfg.topic_prefix)
    order = {"schema": "calstream.work_order", "stage": "stage2", "work_id": "a" * 64,
             "product_name": "jw01234001001_02101_00001_nrcb1"}
    message = contract.build(
        "dead_letter", contract.event_id("dead_letter", "redrive-test"),
        category="permanent_failure", reason="calwebb_image2 failed: boom", stage="stage2",
        attempts=3, exposure_id=order["product_name"],
        original=original_record(topic=topics.name("work.stage2"), partition=0, offset=3,
                                 key=b"k", value=b"x" * 70_000, timestamp_ms=None),
        order={k: v for k, v in order.items() if k != "schema"})
    await write(cfg, [contract.encode(message)])
    stage2 = {topics.name("work.stage2")}
    [before] = await kafka.read_to_end(cfg, topics.name("deadletter"))
    assert stage2_failure(before.value, stage2, before.headers).redrives == ()

    # Its original was cut: it cannot be redriven, and nothing is put back.
    refused = cli(cfg, "deadletters", "redrive", "0:0", "--reason", "fixed")
    assert "cannot be redriven" in refused.stdout, refused
    assert len(await kafka.read_to_end(cfg, topics.name("deadletter"))) == 1

    # Its original on its topic, where the letter says (a redrive sends only
    # what its topic held: deciders/redrive_reading.py).
    await kafka.create_topics(cfg, topics)
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        held = await producer.send_and_wait(topics.name("work.stage2"), b"{}", key=b"k",
                                            partition=0)
    finally:
        await producer.stop()
    whole = contract.build(
        "dead_letter", contract.event_id("dead_letter", "redrive-test-2"),
        category="permanent_failure", reason="calwebb_image2 failed: boom", stage="stage2",
        attempts=3, exposure_id=order["product_name"],
        original=original_record(topic=topics.name("work.stage2"), partition=0,
                                 offset=held.offset, key=b"k", value=b"{}", timestamp_ms=None),
        order={k: v for k, v in order.items() if k != "schema"})
    await write(cfg, [contract.encode(whole)])  # at 0:1
    done = cli(cfg, "deadletters", "redrive", "0:1", "--reason", "fixed", "--by", "night")
    assert done.returncode == 0 and "redriven 1" in done.stdout, done
    letters = await kafka.read_to_end(cfg, topics.name("deadletter"))
    [back] = [r for r in letters if (r.partition, r.offset) != (0, 0)
              and (r.partition, r.offset) != (0, 1)]
    assert json.loads(back.value)["event_id"] == whole.event_id
    assert [(m["dead_letter"], m["by"]) for m in redrive_marks(back.headers)] == [
        (whole.event_id, "night")]
    listed = json.loads(cli(cfg, "deadletters", "list", "--json").stdout)
    assert [len(x["redrives"]) for x in listed if x["event_id"] == whole.event_id] == [1]


async def test_list_pending_leaves_out_a_redriven_letter_however_its_records_lie(
        tmp_path, broker, unique_prefix):
    """--pending drops a letter once its marks are read, and reads on: an
    earlier record of that letter (its first emission, read after the marked
    one a redrive put back) was taken for a letter not seen, without its mark."""
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    topics = Topics(cfg.topic_prefix)
    values = [letter(i) for i in range(10)]
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        name = topics.name("deadletter")
        start = int(time.time() * 1000) - 100
        for i, value in enumerate(values):
            await producer.send(name, value, partition=0, timestamp_ms=start + i)
        for n, i in enumerate((9, 8)):  # put back by their redrives, marked
            mark = json.dumps({"by": "night", "reason": "fixed", "at": f"2026-12-07T0{n}:00:00Z",
                               "dead_letter": json.loads(values[i])["event_id"]}).encode()
            await producer.send(name, values[i], partition=0, timestamp_ms=start + 20 + n,
                                headers=[(REDRIVE_HEADER, mark)])
        await producer.flush()
    finally:
        await producer.stop()
    loaded = await load(cfg, topics, limit=1, pending=True)
    assert [x.body["reason"] for x in loaded.letters] == ["failure number 7"]
