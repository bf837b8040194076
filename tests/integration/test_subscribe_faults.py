"""`calstream subscribe` through infrastructure faults, which it waits for
and reads past as the daemon does: a restart of its broker (the embedded
tansu, memory storage: it starts again empty, and the daemon puts the
topics and the store's product events back) and a `--write-dir` that
cannot be written."""

from __future__ import annotations

import argparse

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.operations.config import load
from calstream.daemon.operations.subscribe import Subscriber
from calstream.topics import contract
from calstream.topics.catalog import Topics

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
PREFIX = "restart."


def event(n: int) -> contract.Message:
    name = f"jw01234001001_02101_{n:05d}_nrcb1"
    work = f"{n:064x}"
    return contract.build(
        "product", contract.event_id("product", work, "success"), work_id=work,
        stage="detector1", pipeline="calwebb_detector1", outcome="success", program="01234",
        observation="001", exposure_id=name, product_name=name,
        inputs=[{"path": f"/inbox/{name}_uncal.fits", "digest": "sha256:" + "1" * 64,
                 "size": 10, "role": "uncal"}],
        outputs=[{"path": f"/products/01234/001/{name}_rate.fits",
                  "digest": "sha256:" + "0" * 64, "size": 10, "suffix": "rate"}],
        jwst_version="3.0.0", crds_context="jwst_0001.pmap", pointing_quality="CALCULATED",
        pointing_provisional=False)


async def publish(cfg, numbers) -> None:
    topics = Topics(PREFIX)
    await kafka.create_topics(cfg, topics)
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for n in numbers:  # one program: one partition, in this order
            await producer.send_and_wait(topics.name("products"), contract.encode(event(n)),
                                         key=b"01234")
    finally:
        await producer.stop()


async def test_a_group_subscriber_goes_on_through_a_broker_restart(tmp_path):
    """The broker started again forgets the group: the subscriber's next
    commit was refused (CommitFailedError: UnknownMemberIdError) and raised
    out of `calstream subscribe`, a traceback, and the event sent in the
    meantime was never delivered. The refused commit is said on stderr;
    the group is joined again and the subscriber reads on, from the
    (empty) group's start: the new event is delivered, the ones put back
    are recognised by their event ids."""
    out = tmp_path / "events"
    out.mkdir()
    with EmbeddedBroker(tmp_path / "broker") as broker:
        cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "topic_prefix": PREFIX,
                                        "kafka_bootstrap": broker.bootstrap,
                                        "fast_group_timing": True})
        await publish(cfg, [1, 2, 3])
        args = argparse.Namespace(program=None, observation=None, stage=None, pipeline=None,
                                  exposure=None, namespace=None, suffix=None, since=None,
                                  write_dir=out, format="json", max=None, group="ingest",
                                  until_idle=None)
        sub = Subscriber(cfg, args)
        failed: list[BaseException] = []

        async def subscribe() -> None:
            try:
                await sub.run()
            except Exception as exc:  # what ended `calstream subscribe` with a traceback
                failed.append(exc)

        def delivered() -> set[str]:
            return {p.stem for p in out.glob("*.json")}

        async with anyio.create_task_group() as tg:
            tg.start_soon(subscribe)
            with anyio.fail_after(60):
                while len(delivered()) < 3:
                    await anyio.sleep(0.1)
            await anyio.to_thread.run_sync(broker.restart)
            # As the daemon does: a run that ended meanwhile sends its event
            # first, then the store's events are put back.
            await publish(cfg, [99, 1, 2, 3, 4, 5])
            with anyio.fail_after(90):
                while {event(99).event_id, event(5).event_id} - delivered() and not failed:
                    await anyio.sleep(0.2)
            sub.stopping = True
        assert not failed, failed
        assert delivered() == {event(n).event_id for n in (1, 2, 3, 4, 5, 99)}
        assert sub.counts["delivered"] == 6 and sub.counts["conflicting"] == 0, sub.counts
        assert sub.counts["duplicate"] >= 3, sub.counts  # those put back, known again


async def test_a_write_dir_that_cannot_be_written_is_waited_for_not_a_traceback(
        broker, unique_prefix, tmp_path, capsys):
    """`--write-dir` is a disk: gone (an operator moved it, a mount not
    back), full or read-only, its write raised OSError out of `calstream
    subscribe`, which ended with a traceback. It is an infrastructure fault:
    the subscriber says so, waits and tries the same event again, and goes
    on once the directory can be written; nothing past that event is
    handled (or committed) meanwhile."""
    out = tmp_path / "events"  # not there: the subscriber's writes fail
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "topic_prefix": unique_prefix,
                                    "kafka_bootstrap": broker})
    topics = Topics(unique_prefix)
    await kafka.create_topics(cfg, topics)
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for n in (1, 2):
            await producer.send_and_wait(topics.name("products"), contract.encode(event(n)),
                                         key=b"01234")
    finally:
        await producer.stop()
    args = argparse.Namespace(program=None, observation=None, stage=None, pipeline=None,
                              exposure=None, namespace=None, suffix=None, since=None,
                              write_dir=out, format="json", max=None, group=None,
                              until_idle=None)
    sub = Subscriber(cfg, args)
    failed: list[BaseException] = []

    async def subscribe() -> None:
        try:
            await sub.run()
        except Exception as exc:  # what ended `calstream subscribe` with a traceback
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(subscribe)
        with anyio.fail_after(30):
            while "cannot write" not in capsys.readouterr().err and not failed:
                await anyio.sleep(0.1)
        out.mkdir()  # the directory is back
        with anyio.fail_after(30):
            while len(list(out.glob("*.json"))) < 2 and not failed:
                await anyio.sleep(0.1)
        sub.stopping = True
    assert not failed, failed
    assert {p.stem for p in out.glob("*.json")} == {event(1).event_id, event(2).event_id}
    assert sub.counts["delivered"] == 2, sub.counts


async def test_a_broker_outage_is_one_line_when_it_goes_and_one_when_it_is_back(
        tmp_path, capsys, caplog, monkeypatch):
    """While its broker was down `calstream subscribe` printed the client
    library's line for every connection it tried: some 700 lines in 10 s,
    the operator's terminal scrolled away. The client's lines are left
    out; the subscriber says the broker is lost, once, and back, once, and
    reads on."""
    import logging

    from calstream.daemon.operations import subscribe

    monkeypatch.setattr(subscribe, "PROBE_CAP", 1.0)  # asked every second while lost
    out = tmp_path / "events"
    out.mkdir()
    with EmbeddedBroker(tmp_path / "broker") as broker:
        cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "topic_prefix": PREFIX,
                                        "kafka_bootstrap": broker.bootstrap})
        await publish(cfg, [1])
        args = argparse.Namespace(program=None, observation=None, stage=None, pipeline=None,
                                  exposure=None, namespace=None, suffix=None, since=None,
                                  write_dir=out, format="json", max=None, group=None,
                                  until_idle=None)
        sub = Subscriber(cfg, args)
        said: list[str] = []

        async def until_said(words: str) -> None:
            with anyio.fail_after(30):
                while not any(words in line for line in said):
                    said.extend(capsys.readouterr().err.splitlines())
                    await anyio.sleep(0.1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sub.run)
            with anyio.fail_after(30):
                while not list(out.glob("*.json")):
                    await anyio.sleep(0.1)
            broker.stop()
            await until_said(" lost: not answering")
            await anyio.sleep(1)  # the client tries its connections meanwhile
            broker.start()  # empty: the daemon puts its events back, then the new one
            await publish(cfg, [1, 2])
            await until_said(" is back after ")
            with anyio.fail_after(30):
                while len(list(out.glob("*.json"))) < 2:
                    await anyio.sleep(0.1)
            sub.stopping = True
        said.extend(capsys.readouterr().err.splitlines())
    client = [r for r in caplog.records
              if r.name.split(".")[0] in ("aiokafka", "kafka") and r.levelno >= logging.WARNING]
    assert client == [], f"{len(client)} client line(s), e.g. {client[0].getMessage()}"
    assert [line for line in said if "broker" in line] == [
        f"subscribe: broker {broker.bootstrap} lost: not answering; waiting for it (nothing "
        "is read or committed meanwhile; the client's own lines are left out)",
        next(line for line in said if " is back after " in line)], said
    assert sub.counts["broker_lost"] == 1 and sub.counts["delivered"] == 2, sub.counts
