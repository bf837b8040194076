"""`calstream replay` told no inbox roots (no --config, --inbox or work dir)
reads no file a record names (session 46).

Where two arrivals of one exposure disagree, the replay reads the file to
tell which is its own (session 45). Without roots it read whatever regular
file the records named, hashed whole: anyone who may write `raw` could make
the operator's replay read any file the operator can (a mount that hangs,
a file of many GB, /proc). Now such a replay reads none: the later record
is taken, as before session 45, and the report says so once, with how many
exposures it concerned.
"""

import io

import pytest

from calstream.daemon.deciders.replay_selection import Selection
from calstream.daemon.doers import digest_memo, kafka
from calstream.daemon.doers.message_sender import send_messages
from calstream.daemon.operations.cli.replay import _print_report
from calstream.daemon.operations.config import load
from calstream.daemon.operations.replay import run_replay
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .test_replay_forged import file_arrival

pytestmark = [pytest.mark.integration]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_a_replay_that_knows_no_inbox_roots_reads_no_file_a_record_names(
        broker, unique_prefix, tmp_path):
    from calstream.steps.exposure import describe_exposure
    from calstream.steps.fitsfile import file_digest

    from ..unit.test_exposure import write

    # No work dir, inbox or config: the command knows no inbox roots.
    cfg = load(None, env={}, flags={"kafka_bootstrap": broker, "topic_prefix": unique_prefix,
                                    "products": tmp_path / "products"})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    elsewhere = tmp_path / "anywhere"
    elsewhere.mkdir()
    path = write(elsewhere)  # any file the operator can read, named by a record
    info, digest = describe_exposure(path), file_digest(path)
    forged = "sha256:" + "f" * 64
    await send_messages(cfg, topics.name("raw"), [
        (info.exposure_id, file_arrival(path, digest)),
        (info.exposure_id, file_arrival(path, forged))])

    report = await run_replay(cfg, source="raw", selection=Selection(), namespace="n1",
                              crds_context=None)
    assert report["inbox_roots"] is None, report
    # Not read: no digest of it taken (the judge hashed it, and took the first).
    assert digest_memo.signature_of(path.resolve(), digest) is None
    [replayed] = [contract.decode(r.value).body
                  for r in await kafka.read_to_end(cfg, topics.name("replay"))]
    assert replayed["digest"] == forged  # the later one, as before session 45
    assert (report["published"], report["superseded"], report["disagreeing_unread"]) \
        == (1, 1, 1), report
    out = io.StringIO()
    _print_report(report, out)
    assert ("1 exposure(s) with arrivals that disagree (path, digest, size or header copy): "
            "the later one taken, their files not read, for this command knows no inbox "
            "roots (not known to this command") in out.getvalue(), out.getvalue()
