"""NewestFirst at its windows' edges (the embedded broker, real records):
every record handed on once, newest first, whatever the partitions hold."""

from __future__ import annotations

import time

import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.kafka.newest_first import NewestFirst
from calstream.topics.catalog import Topics

from .support import daemon_config

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_every_record_once_newest_first_across_window_edges(tmp_path, broker,
                                                                   unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    name = Topics(cfg.topic_prefix).name("deadletter")
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(name))
        assert len(partitions) >= 3  # the third stays empty
        # 7 records on the first partition, 9 on the second (window 3: a
        # window ends exactly at the beginning, another does not), the
        # others empty; a millisecond apart, interleaved.
        counts = {partitions[0]: 7, partitions[1]: 9}
        start, sent = int(time.time() * 1000) - 100, []
        i = 0
        for n in range(max(counts.values())):
            for p, count in counts.items():
                if n < count:
                    await producer.send_and_wait(name, b"v%d" % i, partition=p,
                                                 timestamp_ms=start + i)
                    sent.append(b"v%d" % i)
                    i += 1
    finally:
        await producer.stop()
    for window in (1, 3, 50):
        got = []
        async with NewestFirst(cfg, name, when=lambda r: (r.timestamp, r.offset),
                               window=window) as reader:
            while (record := await reader.next()) is not None:
                got.append(record.value)
            assert reader.left() == 0 and reader.records_read == len(sent)
        assert got == sent[::-1], window
    async with NewestFirst(cfg, name + ".none", when=lambda r: r.offset) as reader:
        assert await reader.next() is None and reader.left() == 0


async def test_since_stops_at_the_oldest_wanted_across_partitions(tmp_path, broker,
                                                                  unique_prefix):
    """--since reads back, across partitions, past the first record older
    than it (a clock behind may have stamped it) to the first older than
    it by CLOCK_BEHIND_MS: each newer one once, none older shown (records
    ten minutes apart, alternating partitions)."""
    import datetime as dt

    from calstream.daemon.operations.cli.dead_letter_reading import CLOCK_BEHIND_MS, load

    from .test_dead_letters_at_scale import letter

    cfg = daemon_config(tmp_path, broker, unique_prefix)
    name = Topics(cfg.topic_prefix).name("deadletter")
    step = 600_000
    assert CLOCK_BEHIND_MS < 20 * step  # the reading stops well before the oldest
    producer = kafka.producer(cfg)
    await producer.start()
    start = int(time.time() * 1000) - 41 * step
    try:
        for i in range(40):
            await producer.send_and_wait(name, letter(i), partition=i % 2,
                                         timestamp_ms=start + step * i)
    finally:
        await producer.stop()
    since = dt.datetime.fromtimestamp((start + step * 25) / 1000, dt.UTC)
    loaded = await load(cfg, Topics(cfg.topic_prefix), since=since)
    assert [x.body["reason"] for x in loaded.letters] == [
        f"failure number {i}" for i in range(39, 24, -1)]
    assert loaded.cut == "since" and loaded.older >= 1


async def test_a_put_back_stamped_by_a_clock_behind_hides_no_newer_letter(tmp_path, broker,
                                                                         unique_prefix):
    """A redrive's put-back lies at its partition's end, stamped by the
    operator's clock; one ten minutes behind looked older than --since, and
    the reading stopped at it: the newer letters below it were not listed."""
    import datetime as dt
    import json

    from calstream.daemon.operations.cli.dead_letter_reading import load
    from calstream.topics.dead_letters import REDRIVE_HEADER

    from .test_dead_letters_at_scale import letter

    cfg = daemon_config(tmp_path, broker, unique_prefix)
    name = Topics(cfg.topic_prefix).name("deadletter")
    now = int(time.time() * 1000)
    since_ms = now - 3_600_000
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        old = letter(0)  # from yesterday
        await producer.send_and_wait(name, old, partition=0, timestamp_ms=now - 86_400_000)
        for i in (1, 2, 3):  # this last half hour
            await producer.send_and_wait(name, letter(i), partition=0,
                                         timestamp_ms=now - 1_800_000 + i * 1000)
        mark = json.dumps({"by": "night", "reason": "fixed", "at": "2026-12-07T03:00:00Z",
                           "dead_letter": json.loads(old)["event_id"]}).encode()
        await producer.send_and_wait(name, old, partition=0, timestamp_ms=since_ms - 600_000,
                                     headers=[(REDRIVE_HEADER, mark)])
    finally:
        await producer.stop()
    loaded = await load(cfg, Topics(cfg.topic_prefix),
                        since=dt.datetime.fromtimestamp(since_ms / 1000, dt.UTC))
    assert [x.body["reason"] for x in loaded.letters] == [
        f"failure number {i}" for i in (3, 2, 1)]
    assert loaded.cut == "since"  # yesterday's record ended the reading
