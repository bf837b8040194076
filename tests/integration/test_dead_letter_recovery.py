"""Dead letters survive the embedded broker losing its topics: the
supervisor's restart of a killed broker and a start on an empty one both
put back what the daemon sent (doers/dead_letter_ledger.py), once each;
so does a start on a topic that lost them but holds another daemon's, and
an external broker that comes back empty while the daemon runs, also one
started again between two probes. A redrive made before the loss is still
listed after it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal

import anyio
import pytest

from calstream.daemon.doers import broker_probe, broker_supervisor, kafka
from calstream.daemon.doers.broker_recovery import DEAD_LETTERS_MARKER
from calstream.daemon.doers.dead_letter_ledger import DeadLetterLedger
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.runtime import Daemon
from calstream.topics.catalog import Topics

from .support import (
    cli,
    daemon_config,
    metric,
    read_all,
    running_daemon,
    scrape,
    until,
    wait_for,
)
from .test_holds import send

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BAD = "jw01234001001_02101_00001_nrcb1_uncal.fits"


def dead_letters(messages) -> list:
    return [m for m in messages if getattr(m, "type", None) == "dead_letter"]


async def a_dead_letter(daemon: Daemon) -> dict:
    """A file that is no FITS file dropped in the inbox: its dead letter."""
    cfg = daemon.cfg
    (cfg.inbox / BAD).write_text("a telemetry log, not a FITS file\n" * 100)
    found = await wait_for(cfg, ["deadletter"], lambda ms: dead_letters(ms), timeout=60)
    (letter,) = dead_letters(found)
    assert letter["category"] == "bad_file"
    # A reader sees the letter before its send has returned: then its place
    # is noted (Publisher.publish), then the quarantine's mark goes. A stop
    # before leaves no place and the mark, and the next start sends the
    # letter again (a second record of it): the tests below count records.
    await until(lambda: not (cfg.quarantine / (BAD + ".unreported")).exists())
    return letter.body


@contextlib.asynccontextmanager
async def on_a_broker_of_its_own(cfg):
    """A daemon running on its own embedded broker; both stopped after (the
    broker's topics gone with it)."""
    daemon = Daemon(cfg)
    daemon.start_broker()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            try:
                yield daemon
            finally:
                tg.cancel_scope.cancel()
    finally:
        daemon.stop_broker()


async def a_dead_letter_on_a_broker_of_its_own(cfg) -> tuple[dict, list]:
    """A daemon on its own embedded broker makes a dead letter, then stops,
    its broker with it: the letter, and the dead-letter topic's records as
    they were."""
    async with on_a_broker_of_its_own(cfg) as daemon:
        sent = await a_dead_letter(daemon)
        records = await kafka.read_to_end(daemon.cfg, Topics(cfg.topic_prefix).name(
            "deadletter"))
    return sent, records


async def test_the_dead_letters_come_back_after_the_broker_is_killed(tmp_path, unique_prefix):
    cfg = daemon_config(tmp_path, None, unique_prefix, roles=["watcher"])
    async with on_a_broker_of_its_own(cfg) as daemon:
        sent = await a_dead_letter(daemon)
        kept = cfg.work_dir / "deadletters" / "deadletter" / f"{sent['event_id']}.json"
        written = kept.stat().st_ino
        os.kill(daemon.broker.process.pid, signal.SIGKILL)
        with anyio.fail_after(60):
            while not daemon.supervisor.restarts:
                await anyio.sleep(0.1)
        await wait_for(daemon.cfg, ["deadletter"], lambda ms: any(
            m.event_id == sent["event_id"] for m in dead_letters(ms)), timeout=60)
        on_topic = dead_letters(await read_all(daemon.cfg, ["deadletter"]))
        listed = await anyio.to_thread.run_sync(cli, daemon.cfg, "deadletters", "list")
    assert [m.body for m in on_topic] == [sent]  # the same record, once
    assert kept.stat().st_ino == written  # sent again, not written again
    assert listed.returncode == 0 and "bad_file" in listed.stdout, listed


async def test_a_redrive_made_before_the_broker_was_killed_is_still_listed(
        tmp_path, unique_prefix, kit):
    """The redrive's mark was only a header on the redriven record, on a topic
    the broker lost: the dead letter came back "not redriven", and an
    operator would redrive it twice. The daemon that read the redriven
    record keeps the mark and puts it back with the dead letter. (``kit``:
    its CRDS cache, which a detector1 daemon's start needs.)"""
    cfg = daemon_config(tmp_path, None, unique_prefix, roles=["detector1"])
    async with on_a_broker_of_its_own(cfg) as daemon:
        await send(daemon.cfg, "raw", "junk", b"not json at all")
        found = await wait_for(daemon.cfg, ["deadletter"], dead_letters, timeout=60)
        (letter,) = dead_letters(found)
        redriven = await anyio.to_thread.run_sync(
            cli, daemon.cfg, "deadletters", "redrive", letter.event_id[:16], "--reason",
            "the producer's encoding fixed", "--by", "night-shift")
        assert redriven.returncode == 0 and "redriven 1" in redriven.stdout, redriven
        # Still not JSON: dead-lettered again, so the redriven record was read.
        await wait_for(daemon.cfg, ["deadletter"], lambda ms: len(dead_letters(ms)) == 2,
                       timeout=60)
        os.kill(daemon.broker.process.pid, signal.SIGKILL)
        with anyio.fail_after(60):
            while not daemon.supervisor.restarts:
                await anyio.sleep(0.1)
        await wait_for(daemon.cfg, ["deadletter"], lambda ms: len(dead_letters(ms)) == 2,
                       timeout=60)
        listed = await anyio.to_thread.run_sync(cli, daemon.cfg, "deadletters", "list",
                                                "--json")
        pending = await anyio.to_thread.run_sync(cli, daemon.cfg, "deadletters", "list",
                                                 "--pending", "--json")
        again = await anyio.to_thread.run_sync(
            cli, daemon.cfg, "deadletters", "redrive", letter.event_id[:16], "--reason",
            "the producer's encoding fixed")
    # Each command's own words where one failed (it printed nothing once,
    # under load, right after the restart: its stderr was not kept).
    assert listed.returncode == 0 and pending.returncode == 0, (listed, pending)
    rows = {r["event_id"]: r for r in json.loads(listed.stdout)}
    assert [(n["by"], n["reason"]) for n in rows[letter.event_id]["redrives"]] == [
        ("night-shift", "the producer's encoding fixed")], rows
    assert letter.event_id not in {r["event_id"] for r in json.loads(pending.stdout)}
    assert "already redriven (1 time(s))" in again.stdout, again


async def test_a_start_on_a_broker_that_lost_them_puts_them_back_once(tmp_path, unique_prefix):
    sent, _ = await a_dead_letter_on_a_broker_of_its_own(
        daemon_config(tmp_path, None, unique_prefix, roles=["watcher"]))
    # The same work directory, a new embedded broker: empty (it keeps its
    # topics in memory). The bad file lies in quarantine: nothing makes its
    # dead letter again but the ledger.
    second = Daemon(daemon_config(tmp_path, None, unique_prefix, roles=["watcher"]))
    second.start_broker()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(second.run)
            on_topic = dead_letters(await read_all(second.cfg, ["deadletter"]))
            tg.cancel_scope.cancel()
        # A start on a broker that still has it sends no copy, also after a
        # re-publishing cut off part-way (its marker left): what the topic
        # has is not sent again.
        for cut_off in (False, True):
            if cut_off:
                marker = second.cfg.work_dir / "deadletters" / DEAD_LETTERS_MARKER
                marker.write_text('{"records": 1}')
            async with anyio.create_task_group() as tg:
                await tg.start(Daemon(second.cfg).run)
                again = dead_letters(await read_all(second.cfg, ["deadletter"]))
                tg.cancel_scope.cancel()
            assert [m.body for m in again] == [sent], cut_off
        assert not marker.exists()
    finally:
        second.stop_broker()
    assert [m.body for m in on_topic] == [sent]


async def test_a_topic_that_lost_them_but_holds_another_daemons_gets_them_back(
        tmp_path, unique_prefix):
    """Two daemons, one dead-letter topic: the broker lost it, and the daemon
    that started first put its own dead letter back. The topic is not empty,
    yet the other daemon's dead letter is missing: the place it noted for it
    now holds another record, so it is put back too, once."""
    first_cfg = daemon_config(tmp_path / "a", None, unique_prefix, roles=["watcher"])
    mine, (record,) = await a_dead_letter_on_a_broker_of_its_own(first_cfg)
    ledger = DeadLetterLedger(first_cfg.work_dir)
    assert ledger.newest_place() == {"event_id": mine["event_id"], "topic": record.topic,
                                     "partition": record.partition, "offset": record.offset}

    other = Daemon(daemon_config(tmp_path / "b", None, unique_prefix, roles=["watcher"]))
    other.start_broker()  # a new broker: the topic starts again at offset 0
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(other.run)
            theirs = await a_dead_letter(other)  # where mine stood
            tg.cancel_scope.cancel()
        on_the_other = other.cfg.kafka_bootstrap
        for start in (1, 2):  # the second start finds it where it was put: no copy
            async with anyio.create_task_group() as tg:
                again = Daemon(daemon_config(tmp_path / "a", on_the_other, unique_prefix,
                                             roles=["watcher"]))
                await tg.start(again.run)
                on_topic = dead_letters(await read_all(again.cfg, ["deadletter"]))
                tg.cancel_scope.cancel()
            assert sorted(m.event_id for m in on_topic) == sorted(
                [mine["event_id"], theirs["event_id"]]), start
    finally:
        other.stop_broker()
    assert [m.body for m in on_topic if m.event_id == mine["event_id"]] == [mine]
    assert ledger.newest_place()["offset"] == 1  # its new place, noted by the re-sending


async def test_the_record_at_a_place_or_why_there_is_none(tmp_path, broker, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    topics = Topics(unique_prefix)
    await kafka.create_topics(cfg, topics)
    name = topics.name("deadletter")
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(name, b"record %d" % n, key=b"k", partition=0)
    finally:
        await producer.stop()
    found = await kafka.record_at(cfg, name, 0, 1)
    assert (found.offset, found.value) == (1, b"record 1")
    assert await kafka.record_at(cfg, name, 0, 3) == "gone"  # beyond its end
    assert await kafka.record_at(cfg, name, 0, 10**12) == "gone"
    assert await kafka.record_at(cfg, name, 999, 0) == "gone"  # no such partition
    assert await kafka.record_at(cfg, f"{unique_prefix}nosuchtopic", 0, 0) == "gone"


async def test_an_external_broker_back_empty_gets_them_back_while_the_daemon_runs(
        tmp_path, unique_prefix):
    """A broker the daemon only connects to (not its embedded one: its
    restarts are nothing the daemon does) is lost, then answers again with
    nothing. The supervisor's "back" puts the dead letter back, without a
    restart of the daemon (doers/broker_supervisor.py, ``on_back``)."""
    with EmbeddedBroker(tmp_path / "external") as external:
        cfg = daemon_config(tmp_path, external.bootstrap, unique_prefix, roles=["watcher"])
        async with running_daemon(cfg) as daemon:
            sent = await a_dead_letter(daemon)
            external.stop()
            await until(lambda: daemon.supervisor.health.lost_since is not None)
            external.start()  # the same port, empty: no topic, no record
            back = await wait_for(cfg, ["deadletter"], lambda ms: any(
                m.event_id == sent["event_id"] for m in dead_letters(ms)), timeout=90)
    assert [m.body for m in dead_letters(back)] == [sent]


async def test_an_external_broker_started_again_between_two_probes_gets_them_back(
        tmp_path, unique_prefix, caplog, monkeypatch):
    """The broker restarted empty faster than the probe looks (here: no probe
    can run while it restarts, the test holding the probe's own thread
    token) fails no probe; the supervisor's check of the partition ends
    finds what it lost, and the dead letter is put back the way a loss the
    probe saw is (deciders/broker_records.py)."""
    caplog.set_level(logging.INFO, logger="calstream.broker")
    # The ends checked every second, not 5: the test waits for three checks
    # (~12 s less). A check that meets the restart fails quietly, and the next
    # one sees the ends gone back all the same.
    monkeypatch.setattr(broker_supervisor, "RECORDS_EVERY", 1.0)
    with EmbeddedBroker(tmp_path / "external") as external:
        cfg = daemon_config(tmp_path, external.bootstrap, unique_prefix, roles=["watcher"])
        async with running_daemon(cfg) as daemon:
            supervisor = daemon.supervisor
            sent = await a_dead_letter(daemon)
            checked = supervisor.records_checked
            await until(lambda: supervisor.records_checked >= checked + 2)  # one after it
            assert supervisor.records_lost == 0  # a broker that keeps its records: no loss
            await until(lambda: broker_probe._PROBE_LIMITER is not None)
            async with broker_probe._PROBE_LIMITER:
                external.stop()
                external.start()  # the same port, empty: no topic, no record
            back = await wait_for(cfg, ["deadletter"], lambda ms: any(
                m.event_id == sent["event_id"] for m in dead_letters(ms)), timeout=60)
            samples = scrape(daemon.ops.address)
    assert [m.body for m in dead_letters(back)] == [sent]
    assert metric(samples, "calstream_broker_records_lost_total") == 1
    said = [r.getMessage() for r in caplog.records
            if r.name == "calstream.broker" and r.module == "broker_supervisor"]
    assert [line for line in said if "lost records without failing a probe" in line], said
    assert not [line for line in said if "not answering" in line], said  # no probe failed
