"""`calstream replay` reading a raw topic that anyone can write (no daemon):
a forged arrival naming a file outside the inbox roots was republished on
`replay` under the operator's replay id, for detector1 to dead-letter. It
is now left out, and counted. So are the other records a replay cannot
republish: one whose broker timestamp is no date, one too large to carry
its replay object; and the report says which inbox roots it judged by."""

import anyio
import pytest

from calstream.daemon.deciders.replay_selection import Selection
from calstream.daemon.doers import kafka
from calstream.daemon.doers.message_sender import send_messages
from calstream.daemon.operations.config import load
from calstream.daemon.operations.replay import run_replay
from calstream.topics import contract
from calstream.topics.catalog import Topics

pytestmark = [pytest.mark.integration]
GOOD = "jw01234001001_02101_00001_nrcb1"
FORGED = "jw01234001001_02101_00002_nrcb1"
HEADER = {"PROGRAM": "01234", "OBSERVTN": "001", "VISIT": "001", "VISITGRP": "02",
          "SEQ_ID": "1", "ACT_ID": "01", "EXPOSURE": "00001", "INSTRUME": "NIRCAM",
          "DETECTOR": "NRCB1", "EXP_TYPE": "NRC_IMAGE", "NEXPOSUR": 4, "NINTS": 1,
          "NGROUPS": 5, "SUBARRAY": "SUB160", "ENGQLPTG": "CALCULATED",
          "DATE-OBS": "2024-01-15", "TIME-OBS": "08:00:00"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _arrival(exposure: str, path: str, digest: str = "sha256:" + "0" * 64, size: int = 10,
             header: dict = HEADER) -> contract.Message:
    return contract.build("arrival", contract.event_id("arrival", exposure, digest),
                          exposure_id=exposure, path=path, digest=digest, size=size,
                          detected_at=contract.utc_now(), source="watch", priority="live",
                          header=header)


def file_arrival(path, digest: str) -> contract.Message:
    """The watcher's arrival of the file at ``path``, claiming ``digest``
    (the file's own, or a forger's)."""
    from calstream.steps.exposure import describe_exposure

    info = describe_exposure(path)
    return _arrival(info.exposure_id, str(path), digest, path.stat().st_size, info.header)


@pytest.mark.anyio
async def test_a_forged_arrival_outside_the_inbox_is_not_replayed(broker, unique_prefix,
                                                                   tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    await send_messages(cfg, topics.name("raw"), [
        (GOOD, _arrival(GOOD, f"{cfg.inbox}/{GOOD}_uncal.fits")),
        (FORGED, _arrival(FORGED, "/etc/shadow")),
        (FORGED, _arrival(FORGED, f"{cfg.inbox}/../../etc/{FORGED}_uncal.fits"))])

    report = await run_replay(cfg, source="raw", selection=Selection(), namespace="n1",
                              crds_context=None)
    assert report["published"] == 1, report  # was 2: the later forged one too
    assert report["outside_roots"] == 2
    replayed = [contract.decode(r.value).body
                for r in await kafka.read_to_end(cfg, topics.name("replay"))]
    assert [m["exposure_id"] for m in replayed] == [GOOD]


class _Stop(Exception):
    """The operator's Ctrl-C, or the broker lost, after the first item went."""


@pytest.mark.anyio
async def test_a_replay_stopped_while_it_publishes_says_what_went(broker, unique_prefix,
                                                                  tmp_path, capsys):
    """Stopped half-way through its publishing (Ctrl-C: exit 130; the broker
    gone: its one line), a replay said nothing of what it had sent. Now it
    says how many of how many went, the last one's name, and that the same
    command again is safe (tests/integration/test_replay.py runs a replay
    twice: the second calibrates nothing)."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    await send_messages(cfg, topics.name("raw"), [
        (GOOD, _arrival(GOOD, f"{cfg.inbox}/{GOOD}_uncal.fits")),
        (FORGED, _arrival(FORGED, f"{cfg.inbox}/{FORGED}_uncal.fits"))])

    def stop_after_the_first(key: str) -> None:
        raise _Stop(key)

    with pytest.raises(_Stop):
        await run_replay(cfg, source="raw", selection=Selection(), namespace="n1",
                         crds_context=None, on_published=stop_after_the_first)
    err = capsys.readouterr().err
    [went] = [contract.decode(r.value)["exposure_id"]
              for r in await kafka.read_to_end(cfg, topics.name("replay"))]
    assert (f"stopped after 1 of 2 item(s) published to {topics.name('replay')} "
            f"(the last: {went}); the same command again is safe") in err, err


@pytest.mark.anyio
async def test_a_record_whose_broker_time_is_no_date_is_read_not_a_traceback(
        broker, unique_prefix, tmp_path):
    """A record's broker timestamp is its producer's (CreateTime): anyone
    who may write the topic sets it. One of year 33658 (or before year 1)
    as a partition's first record raised ValueError out of the replay's
    scan: `calstream replay` ended in a traceback, for every selection,
    until retention took the record. It is now a record with no time: the
    replay goes on, says so, and a range it cannot judge is a gap."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for exposure, ms in ((GOOD, 10**15), (FORGED, -(10**15))):
            message = _arrival(exposure, f"{cfg.inbox}/{exposure}_uncal.fits")
            await producer.send_and_wait(topics.name("raw"), contract.encode(message),
                                         key=exposure.encode(), partition=0, timestamp_ms=ms)
    finally:
        await producer.stop()

    report = await run_replay(cfg, source="raw", selection=Selection(), namespace="n1",
                              crds_context=None, dry_run=True)
    assert report["selected"] == 2, report
    assert [item["name"] for item in report["items"]] == [GOOD, FORGED]
    assert all(item["time"] is None for item in report["items"]), report["items"]
    [row] = [p for p in report["partitions"] if p["count"]]
    assert (row["first_time"], row["first_retained_time"]) == (None, None), row


def _arrival_of_bytes(exposure: str, path: str, size: int) -> contract.Message:
    """A valid arrival of ``size`` bytes (a header keyword filling it)."""
    message = _arrival(exposure, path)
    body = {**message.body, "producer": {"role": "watcher"},
            "header": {**message["header"], "TARGPROP": ""}}
    base = len(contract.within_limit(contract.Message("arrival", body)))
    body["header"]["TARGPROP"] = "x" * (size - base)
    message = contract.Message("arrival", body)
    assert len(contract.encode(message)) == size
    return message


@pytest.mark.anyio
async def test_a_record_too_large_to_carry_its_replay_is_left_out_not_a_stop(
        broker, unique_prefix, tmp_path):
    """A valid record a few hundred bytes under the 1 MB every reader takes
    (an arrival whose header copy is that large: anyone's to write, and the
    door passes a file's under 1 MB) is over it once it carries its replay
    object. Its send raised InvalidMessage half-way through the publishing:
    the replay stopped there, every time it was run, and the items after it
    were never sent. It is now left out before anything is sent, and
    counted; the rest is replayed."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    big = _arrival_of_bytes(FORGED, f"{cfg.inbox}/{FORGED}_uncal.fits",
                            contract.MAX_MESSAGE_BYTES - 10)
    await send_messages(cfg, topics.name("raw"), [
        (FORGED, big), (GOOD, _arrival(GOOD, f"{cfg.inbox}/{GOOD}_uncal.fits"))])

    report = await run_replay(cfg, source="raw", selection=Selection(), namespace="n1",
                              crds_context=None)
    replayed = [contract.decode(r.value).body
                for r in await kafka.read_to_end(cfg, topics.name("replay"))]
    assert [m["exposure_id"] for m in replayed] == [GOOD]
    assert (report["published"], report["too_large"]) == (1, 1), report
    dry = await run_replay(cfg, source="raw", selection=Selection(), namespace="n1",
                           crds_context=None, dry_run=True)
    assert (dry["selected"], dry["too_large"]) == (1, 1), dry


def test_arrivals_left_out_by_roots_the_command_guessed_say_which_roots(
        broker, unique_prefix, tmp_path, capsys):
    """`--work-dir W` alone gives the command W/inbox as the inbox roots
    (the deployment record does not carry them); a deployment whose inbox
    is elsewhere (its configuration file's `inbox`) had every genuine
    arrival left out, and the report said they named "a file outside the
    inbox roots ... (forged, or from another deployment)": a replay of
    nothing that blamed a forger. The report names the roots it judged by,
    where they came from, and what gives the deployment's."""
    from calstream.daemon.operations.cli.main import main

    inbox = tmp_path / "data" / "inbox"  # the deployment's, set in its config file
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix, "inbox": inbox})
    topics = Topics(cfg.topic_prefix)

    async def arrive() -> None:
        await kafka.create_topics(cfg, topics)
        await send_messages(cfg, topics.name("raw"),
                            [(GOOD, _arrival(GOOD, f"{inbox}/{GOOD}_uncal.fits"))])
    anyio.run(arrive)

    status = main(["replay", "--namespace", "n1", "--dry-run", "--work-dir",
                   str(tmp_path / "work"), "--kafka-bootstrap", broker,
                   "--topic-prefix", unique_prefix])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "1 record(s) left out" in out, out
    assert f"inbox roots judged by: {tmp_path / 'work' / 'inbox'} (the default under " \
           "work_dir (flag --work-dir)" in out, out
    assert "--config" in out, out


@pytest.mark.anyio
async def test_a_forged_later_arrival_does_not_make_the_real_one_be_skipped(
        broker, unique_prefix, tmp_path):
    """`calstream replay --from raw` took each exposure's latest arrival on
    raw: a forged later one (other bytes claimed for the same file) was
    republished in the real one's place, and detector1 skipped it as stale
    (the file's digest is not its own): the exposure was never replayed.
    The file decides now: the real arrival is the one republished."""
    from calstream.steps.exposure import describe_exposure
    from calstream.steps.fitsfile import file_digest

    from ..unit.test_exposure import write

    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    path = write(cfg.inbox)
    info, digest = describe_exposure(path), file_digest(path)
    await send_messages(cfg, topics.name("raw"), [
        (info.exposure_id, file_arrival(path, digest)),
        (info.exposure_id, file_arrival(path, "sha256:" + "f" * 64))])  # later, forged

    report = await run_replay(cfg, source="raw", selection=Selection(), namespace="n1",
                              crds_context=None)
    assert (report["published"], report["superseded"]) == (1, 1), report
    [replayed] = [contract.decode(r.value).body
                  for r in await kafka.read_to_end(cfg, topics.name("replay"))]
    assert replayed["digest"] == digest  # was the forged one's


@pytest.mark.anyio
async def test_a_forged_arrival_does_not_hide_the_one_the_product_store_holds(
        broker, unique_prefix, tmp_path):
    """A topic that lost an exposure's arrival (the embedded broker started
    again empty) is made good from the product store's record of it; a
    forged arrival of that exposure on raw (anyone may write it) kept the
    record's from being made, was replayed itself, and detector1 skipped
    it: the exposure was never replayed. The file decides: the record's
    arrival is replayed in the forged one's place."""
    from calstream.daemon.doers.product_store import ProductStore
    from calstream.steps.exposure import describe_exposure
    from calstream.steps.fitsfile import file_digest

    from ..unit.test_exposure import write

    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    path = write(cfg.inbox)
    info, digest = describe_exposure(path), file_digest(path)
    name, size = info.exposure_id, path.stat().st_size
    ProductStore(cfg.products).write_record("01234", "001", name=name, stage="detector1", record={
        "work_id": "1" * 64, "event": {
            "stage": "detector1", "exposure_id": name, "arrived_at": contract.utc_now(),
            "header": info.header, "crds_context": "jwst_0001.pmap", "outputs": [],
            "inputs": [{"path": str(path), "digest": digest, "size": size, "role": "uncal"}]}})
    forged = "sha256:" + "f" * 64
    await send_messages(cfg, topics.name("raw"), [(name, file_arrival(path, forged))])

    report = await run_replay(cfg, source="raw", selection=Selection(), namespace="n1",
                              crds_context=None)
    assert (report["published"], report["from_store"]) == (1, 1), report
    [replayed] = [contract.decode(r.value).body
                  for r in await kafka.read_to_end(cfg, topics.name("replay"))]
    assert replayed["digest"] == digest  # was the forged one's
    assert replayed["replay"]["source"] == {"origin": "product store"}
