"""The console over a real broker's dead letters (no daemon): a watcher's
``bad_file`` dead letter carries no original record (``original`` is null),
and once one was on the topic every console page failed (the connection was
dropped, a traceback went to the daemon's stderr)."""

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
    letters = [(name, _letter(n, category="permanent_failure", stage="detector1",
                              exposure_id=name, reason=f"calwebb_detector1 failed: {n}",
                              original=original_record(
                                  topic=topics.name("raw"), partition=0, offset=n, key=name.encode(),
                                  value=b'{"n": %d}' % n, timestamp_ms=None)))
               for n, name in enumerate(names, start=1)]
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
