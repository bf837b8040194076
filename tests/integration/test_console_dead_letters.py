"""The console over a real broker's dead letters (no daemon): a watcher's
``bad_file`` dead letter carries no original record (``original`` is null),
and once one was on the topic every console page failed (the connection was
dropped, a traceback went to the daemon's stderr)."""

import json

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.message_sender import send_messages
from calstream.daemon.operations.config import load
from calstream.daemon.operations.console import Console
from calstream.topics import contract
from calstream.topics.catalog import Topics


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _letter(n: int, **fields) -> contract.Message:
    return contract.build("dead_letter", f"{n:064x}", attempts=0, **fields)


@pytest.mark.anyio
async def test_a_bad_file_and_a_stage3_dead_letter_show_in_the_console(broker, unique_prefix,
                                                                        tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    bad_file = _letter(1, category="bad_file", stage="watcher", exposure_id=None,
                       path=str(cfg.inbox / "notajwstname_uncal.fits"), original=None,
                       reason="'notajwstname_uncal.fits' is not a JWST exposure name")
    product = "jw01234-o001_t001_nircam_clear-f150w"
    stage3 = _letter(2, category="permanent_failure", stage="stage3", exposure_id=None,
                     reason="calwebb_image3 failed: boom",
                     original={"topic": topics.name("work.stage3"), "partition": 0,
                               "offset": 0, "key": product, "value": "{}"})
    await send_messages(cfg, topics.name("deadletter"), [("notajwstname", bad_file),
                                                         (product, stage3)])
    console = Console(cfg, lambda: [])
    code, body, _ = await anyio.to_thread.run_sync(console.handle, "/console/")
    assert code == 200
    assert "not a JWST exposure name" in body.decode()
    code, body, _ = await anyio.to_thread.run_sync(console.handle, "/console/program/01234/001")
    assert code == 200 and "calwebb_image3 failed: boom" in body.decode()


@pytest.mark.anyio
async def test_a_redriven_dead_letter_is_counted_apart_from_those_needing_someone(
        broker, unique_prefix, tmp_path):
    """The console counted a dead letter already redriven in the
    observation's figure, and `calstream status` listed it unmarked: an
    observation whose failures were all handled still read "2 dead
    letters". Now the redriven one is counted apart and marked, as
    `calstream deadletters list --pending` tells them apart."""
    from calstream.daemon.operations.cli.main import main
    from calstream.daemon.operations.status_collection import collect
    from calstream.daemon.operations.status_render import render
    from calstream.topics.dead_letters import original_record

    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    names = [f"jw01234001001_02101_0000{n}_nrcb1" for n in (1, 2)]
    # The originals on their topic, where a redrive's mark follows them.
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        offsets = [(await producer.send_and_wait(topics.name("raw"), b'{"n": %d}' % n,
                                                 key=name.encode(), partition=0)).offset
                   for n, name in enumerate(names, start=1)]
    finally:
        await producer.stop()
    letters = [(name, _letter(n, category="permanent_failure", stage="detector1",
                              exposure_id=name, reason=f"calwebb_detector1 failed: {n}",
                              original=original_record(
                                  topic=topics.name("raw"), partition=0, offset=offset,
                                  key=name.encode(), value=b'{"n": %d}' % n,
                                  timestamp_ms=None)))
               for n, (name, offset) in enumerate(zip(names, offsets, strict=True), start=1)]
    await send_messages(cfg, topics.name("deadletter"), letters)
    cli = ["--kafka-bootstrap", broker, "--topic-prefix", unique_prefix,
           "--work-dir", str(tmp_path)]
    redriven = await anyio.to_thread.run_sync(lambda: main(
        ["deadletters", "redrive", f"{1:064x}", "--reason", "file fixed", *cli]))
    assert redriven == 0

    console = Console(cfg, lambda: [])
    code, body, _ = await anyio.to_thread.run_sync(console.handle, "/console/")
    page = body.decode()
    assert code == 200 and '<td class="num">1 (+1 redriven)</td>' in page, page
    code, body, _ = await anyio.to_thread.run_sync(console.handle, "/console/program/01234/001")
    page = body.decode()
    assert f'<tr class="" id="{names[0]}">' in page and f'<tr class="dead" id="{names[1]}">' in page
    assert "redriven 1x" in page

    st = await collect(cfg, [], dead_letters=10, products=0)
    text = render(st)
    assert "2 shown, 1 of them redriven" in text, text
    [first] = [line for line in text.splitlines() if names[0] in line]
    [second] = [line for line in text.splitlines() if names[1] in line]
    assert "[redriven 1x]" in first and "redriven" not in second


@pytest.mark.anyio
async def test_a_console_rebuild_reads_only_what_the_originals_topics_got_since(
        broker, unique_prefix, tmp_path):
    """Each console rebuild (every ~5 s while a page is open) read every
    original topic named by a dead letter end to end: months of records, to
    find a few redrive marks. Now the first reads each partition holding an
    original from the lowest one, the next only what was appended since, and
    a redrive made between two rebuilds (back on its original's partition,
    not where its key's hash would put it) is seen by the second."""
    from aiokafka.partitioner import DefaultPartitioner

    from calstream.daemon.operations.cli.main import main
    from calstream.daemon.operations.console_data import ConsoleData
    from calstream.daemon.operations.dead_letter_redrives import REDRIVES
    from calstream.topics.dead_letters import original_record

    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    raw = topics.name("raw")
    names = [f"jw01234001001_02101_0000{n}_nrcb1" for n in (1, 2)]
    hashed = DefaultPartitioner()(names[0].encode(), [0, 1, 2, 3], [0, 1, 2, 3])
    place = (hashed + 1) % 4  # not where the partitioner would send the key
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for n in range(5):  # history before the originals, on their partition and the others
            for p in range(4):
                await producer.send_and_wait(raw, b'{"old": %d}' % n, key=b"old", partition=p)
        letters = []
        for n, name in enumerate(names, start=1):
            value = b'{"n": %d}' % n
            meta = await producer.send_and_wait(raw, value, key=name.encode(), partition=place)
            letters.append((name, _letter(n, category="permanent_failure", stage="detector1",
                                          exposure_id=name, reason=f"failed: {n}",
                                          original=original_record(
                                              topic=raw, partition=place, offset=meta.offset,
                                              key=name.encode(), value=value,
                                              timestamp_ms=None))))
    finally:
        await producer.stop()
    await send_messages(cfg, topics.name("deadletter"), letters)

    # ttl below zero: every snapshot() is a rebuild, as pages every few seconds.
    data = ConsoleData(cfg, lambda: [], ttl=-1.0)
    await anyio.to_thread.run_sync(data.snapshot)
    assert data.redrives.records_read == 2  # the two originals, none of the history
    assert data.redrives.read_to == {(raw, place): 7}
    await anyio.to_thread.run_sync(data.snapshot)
    assert data.redrives.records_read == 2  # nothing appended: nothing read again

    cli = ["--kafka-bootstrap", broker, "--topic-prefix", unique_prefix,
           "--work-dir", str(tmp_path)]
    assert await anyio.to_thread.run_sync(lambda: main(
        ["deadletters", "redrive", f"{1:064x}", "--reason", "file fixed", *cli])) == 0
    snap = await anyio.to_thread.run_sync(data.snapshot)
    assert data.redrives.records_read == 3  # the redriven record only
    assert data.redrives.read_to == {(raw, place): 8}
    assert {d["exposure_id"]: d[REDRIVES] for d in snap.dead_letters} == {names[0]: 1,
                                                                          names[1]: 0}


@pytest.mark.anyio
async def test_a_rebuild_out_of_time_for_redrives_says_so_and_the_next_reads_on(
        broker, unique_prefix, tmp_path):
    """The console's first look at months of a topic took its whole broker
    view past collect's timeout (lag, letters: all an error). Now the
    redrive reading has its own budget: a look out of time shows the letters,
    says which were redriven is not known yet, and the next reads on."""
    from calstream.daemon.operations.console_data import ConsoleData
    from calstream.daemon.operations.dead_letter_redrives import REDRIVES
    from calstream.topics.dead_letters import REDRIVE_HEADER, original_record

    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    raw, name, value = topics.name("raw"), "jw01234001001_02101_00001_nrcb1", b'{"n": 1}'
    letter = _letter(1, category="permanent_failure", stage="detector1", exposure_id=name,
                     reason="failed", original=original_record(
                         topic=raw, partition=0, offset=0, key=name.encode(), value=value,
                         timestamp_ms=None))
    note = {"by": "ops", "reason": "fixed", "dead_letter": letter.event_id,
            "dead_letter_ref": "0:0", "at": "2026-12-07T00:00:00Z"}
    producer = kafka.producer(cfg)
    await producer.start()
    try:  # the original, then its redrive
        for headers in ([], [(REDRIVE_HEADER, json.dumps(note).encode())]):
            await producer.send_and_wait(raw, value, key=name.encode(), partition=0,
                                         headers=headers)
    finally:
        await producer.stop()
    await send_messages(cfg, topics.name("deadletter"), [(name, letter)])

    data = ConsoleData(cfg, lambda: [], ttl=-1.0)
    data.redrives.budget = 0.0  # out of time at once
    snap = await anyio.to_thread.run_sync(data.snapshot)
    assert snap.status.broker.error is None
    assert "not read to their end" in snap.status.broker.redrives_error
    assert [d["exposure_id"] for d in snap.dead_letters] == [name]
    data.redrives.budget = None
    snap = await anyio.to_thread.run_sync(data.snapshot)
    assert snap.status.broker.redrives_error is None
    assert [d[REDRIVES] for d in snap.dead_letters] == [1]


@pytest.mark.anyio
async def test_a_forged_letter_s_megabyte_is_not_what_status_and_the_console_keep(
        broker, unique_prefix, tmp_path):
    """The tail of the dead-letter topic was kept as records, then decoded
    whole: the console's 500 letters of up to a megabyte each (anyone may
    write the topic, and a letter may carry fields of its own) held a
    gigabyte in the daemon at each rebuild. Each letter is now decoded as it
    is fetched and kept bounded: its texts as calstream writes them, its
    original's value by its digest alone, its own other fields left out."""
    import hashlib

    from calstream.daemon.operations.status_collection import collect
    from calstream.topics.dead_letters import REASON_BUDGET, original_digest

    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    carried = "v" * 100_000  # a letter from before contract 1.2: judged by the value it carries
    forged = _letter(1, category="permanent_failure", stage="detector1", exposure_id=None,
                     reason="r" * 400_000, junk=["j" * 400_000],
                     original={"topic": topics.name("raw"), "partition": 0, "offset": 0,
                               "key": "k", "value": carried})
    await send_messages(cfg, topics.name("deadletter"), [("k", forged)])
    st = await collect(cfg, [], dead_letters=10, products=0)
    [kept] = st.broker.dead_letters
    assert len(kept["reason"]) <= REASON_BUDGET and "junk" not in kept
    assert "value" not in kept["original"]
    assert original_digest(kept["original"]) == hashlib.sha256(carried.encode()).hexdigest()
