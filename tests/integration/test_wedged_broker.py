"""A broker that is alive but does not answer is a lost broker.

A stopped or deadlocked broker process (here SIGSTOP) still has its kernel
accept TCP connections, so a probe that only connected saw it up: /readyz
ready, ``calstream_broker_up`` 1, no "lost" line, and the daemon's own
embedded broker was never started again -- every client timed out and parked
its work for as long as the broker stayed wedged. The probe now asks a
request and waits for its answer (doers/broker_probe.py):

* an external broker, wedged or gone, is lost and back in three lines (the
  client library quiet meanwhile), and /healthz fails past the bound;
* the embedded broker, wedged, is killed and started again, and the daemon
  goes on ordering work, with nobody's help.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import anyio
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaTimeoutError

from calstream.daemon.deciders.replay_selection import Selection
from calstream.daemon.deciders.replay_sieve import ScanSieve
from calstream.daemon.doers import kafka
from calstream.daemon.doers.broker_probe import answers
from calstream.daemon.doers.broker_supervisor import BrokerSupervisor
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.kafka.clients import unreachable
from calstream.daemon.doers.replay_source import scan
from calstream.daemon.operations.metrics import Metrics
from calstream.daemon.runtime import Daemon
from calstream.topics.catalog import Topics

from .support import daemon_config, metric, scrape, wait_for
from .test_holds import send
from .test_planner_ha import product_event, publish

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def stop_fully(pid: int) -> None:
    """SIGSTOP, and back once every thread of ``pid`` is stopped: the signal
    reaches a busy process's threads a moment later, in which tansu could
    still answer a request the test means it never to answer."""
    os.kill(pid, signal.SIGSTOP)
    tasks = Path(f"/proc/{pid}/task")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = []
        for task in tasks.iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} not stopped 30 s after SIGSTOP")


@pytest.mark.parametrize("how", ["wedged", "gone"])
async def test_an_external_broker_lost_and_back_is_three_lines_and_quiet_clients(
        tmp_path, caplog, how):
    with EmbeddedBroker(tmp_path / "broker") as own:
        assert answers(own.bootstrap, connect_timeout=2, answer_timeout=5)
        sup = BrokerSupervisor(own.bootstrap, Metrics(), loss_bound=0.5, answer_timeout=1.0)
        caplog.set_level(logging.INFO, logger="calstream.broker")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.run)
                if how == "wedged":  # connections still accepted, never answered
                    os.kill(own.process.pid, signal.SIGSTOP)
                else:  # nothing listens: connections refused
                    own.stop()
                with anyio.fail_after(60):
                    while sup.problem(for_health=True) is None or not sup.health.said_still_lost:
                        await anyio.sleep(0.05)
                assert sup.problem() and sup.metrics.broker_up._value.get() == 0
                assert logging.getLogger("aiokafka").getEffectiveLevel() == logging.CRITICAL
                if how == "wedged":
                    os.kill(own.process.pid, signal.SIGCONT)
                else:
                    own.start()  # on the same port
                with anyio.fail_after(60):
                    while sup.problem() is not None:
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
        finally:
            if own.alive():
                os.kill(own.process.pid, signal.SIGCONT)  # stopped, it would not stop
    said = [r.getMessage() for r in caplog.records  # the supervisor's, not the broker's own
            if r.name == "calstream.broker" and r.module == "broker_supervisor"]
    assert len(said) == 3, said  # one line per change, however long the outage
    assert "lost" in said[0] and "still lost" in said[1] and said[2].endswith("is back")
    assert logging.getLogger("aiokafka").getEffectiveLevel() < logging.CRITICAL
    assert sup.metrics.broker_up._value.get() == 1


async def test_a_wedged_embedded_broker_is_started_again_and_work_goes_on(
        tmp_path, unique_prefix, caplog):
    cfg = daemon_config(tmp_path, None, unique_prefix, roles=["planner"],
                        broker_timeout_seconds=3.0, max_attempts=2, retry_backoff=0.1,
                        park_recheck_seconds=1.0)
    daemon = Daemon(cfg)
    daemon.start_broker()  # the daemon owns this tansu
    caplog.set_level(logging.INFO, logger="calstream.broker")
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            cfg = daemon.cfg
            with anyio.fail_after(120):
                while not daemon.readiness()[0]:
                    await anyio.sleep(0.2)
            wedged = daemon.broker.process.pid
            stop_fully(wedged)
            with anyio.fail_after(120):  # within EMBEDDED_ANSWER_EVERY and the time-out
                while not daemon.supervisor.restarts:
                    await anyio.sleep(0.2)
            assert daemon.broker.alive() and daemon.broker.process.pid != wedged
            await publish(cfg, [product_event(cfg.products, cfg.inbox, 4949, 1, 2)])
            orders = await wait_for(cfg, ["work.stage2"], lambda ms: any(
                getattr(m, "type", "") == "work_order" for m in ms), timeout=120)
            with anyio.fail_after(120):
                while not (ready_now := daemon.readiness())[0]:
                    await anyio.sleep(0.2)
            samples = scrape(daemon.ops.address)
            tg.cancel_scope.cancel()
    finally:
        daemon.stop_broker()
    assert daemon.supervisor.wedged == 1 and daemon.supervisor.restarts == 1
    assert metric(samples, "calstream_embedded_broker_restarts_total") == 1
    assert metric(samples, "calstream_broker_up") == 1
    assert ready_now[0], ready_now[1]
    assert [o["exposure_id"] for o in orders if o.type == "work_order"]
    said = [r.getMessage() for r in caplog.records if r.name == "calstream.broker"]
    assert any(f"pid {wedged}) was alive but had not answered" in line for line in said), said


async def test_an_embedded_broker_wedged_during_the_start_is_started_again(
        tmp_path, unique_prefix, monkeypatch, caplog):
    """The supervisor runs only once the daemon has started: before that, a
    start step that meets the wedged broker kills it and starts it again
    (start_waits.restarting_embedded), as it does for a dead one."""
    from calstream.daemon import runtime

    cfg = daemon_config(tmp_path, None, unique_prefix, roles=["planner"],
                        broker_timeout_seconds=3.0, max_attempts=2, retry_backoff=0.1,
                        park_recheck_seconds=1.0)
    daemon = Daemon(cfg)
    daemon.start_broker()
    wedged: list[int] = []
    recover = runtime.recover_lost_records

    async def wedging_first(*args, **kwargs):  # the start's last step that needs the broker
        if not wedged:
            wedged.append(daemon.broker.process.pid)
            stop_fully(wedged[0])
        return await recover(*args, **kwargs)

    monkeypatch.setattr(runtime, "recover_lost_records", wedging_first)
    caplog.set_level(logging.INFO, logger="calstream.start")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            with anyio.fail_after(120):  # a bound for a broken daemon, not a measure
                while not (daemon.start_waits.done and daemon.readiness()[0]):
                    await anyio.sleep(0.2)
            assert wedged and daemon.broker.alive() and daemon.broker.process.pid != wedged[0]
            cfg = daemon.cfg
            await publish(cfg, [product_event(cfg.products, cfg.inbox, 5050, 1, 2)])
            orders = await wait_for(cfg, ["work.stage2"], lambda ms: any(
                getattr(m, "type", "") == "work_order" for m in ms), timeout=120)
            tg.cancel_scope.cancel()
    finally:
        daemon.stop_broker()
        for pid in wedged:  # a broker still stopped would not stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert [o["exposure_id"] for o in orders if o.type == "work_order"]
    said = [r.getMessage() for r in caplog.records]
    assert any(f"pid {wedged[0]}) was alive but had not answered for 3s during the start"
               in line for line in said), said


@pytest.mark.parametrize("read", ["a command's read", "a replay's scan"])
async def test_a_read_ends_with_a_broker_fault_when_the_broker_stops_answering(
        tmp_path, unique_prefix, monkeypatch, read):
    """aiokafka's fetches come back empty, never raising, from a broker that
    stopped answering: `calstream holds list`, `plan list` and `deadletters
    list` waited for ever, and a replay's scan ended after 120 s however
    long its topic (months of records may take longer to read). Each now
    ends after ``broker_timeout_seconds`` without a record nor the end, and
    the command says in one line that the broker does not answer."""
    with EmbeddedBroker(tmp_path / "broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, broker_timeout_seconds=2.0)
        await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
        await send(cfg, "holds", "a-hold", b"a record: the read has something to fetch")
        stopped: list[int] = []
        seek = AIOKafkaConsumer.seek_to_beginning

        async def stopping_first(self, *partitions):
            # Connected, the topic's partitions found and assigned, no record
            # fetched yet (aiokafka fetches ahead as soon as it may: stopped
            # at the first fetch, the record could already be in).
            if not stopped:
                stopped.append(own.process.pid)
                stop_fully(own.process.pid)
            return await seek(self, *partitions)

        monkeypatch.setattr(AIOKafkaConsumer, "seek_to_beginning", stopping_first)
        name = Topics(cfg.topic_prefix).name("holds")
        try:
            with anyio.fail_after(90):  # a bound for a read that waits for ever, not a measure
                with pytest.raises(KafkaTimeoutError) as raised:
                    if read == "a command's read":
                        await kafka.read_to_end(cfg, name)
                    else:
                        await scan(cfg, name, ScanSieve(
                            "arrival", Selection(),
                            {"inbox_roots": None, "products_root": str(cfg.products)}))
        finally:
            os.kill(own.process.pid, signal.SIGCONT)  # stopped, it would not stop
    assert stopped
    assert unreachable(raised.value) == f"no record nor the end of {name} within 2s"
