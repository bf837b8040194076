"""The embedded broker SIGKILLed mid-run (issue 13): the daemon starts it
again on the same port, rebuilds what its memory held, and the file in flight
and one dropped afterwards both become products, without a restart by hand."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.runtime import Daemon
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver

from .support import (
    BROKER_TIMEOUT,
    cli,
    daemon_config,
    metric,
    products,
    running_daemon,
    scrape,
    until,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def exposure_id(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


async def test_tansu_killed_mid_run_is_restarted_and_nothing_is_lost(tmp_path, kit,
                                                                     unique_prefix):
    cfg = daemon_config(tmp_path, None, unique_prefix, workers=1,
                        roles=["watcher", "detector1", "planner"])
    daemon = Daemon(cfg)
    daemon.start_broker()  # the daemon owns this tansu
    port = daemon.broker.port
    first, second = kit.uncal_files[0], kit.uncal_files[1]
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            cfg = daemon.cfg
            # A plan the planner keeps: the restarted broker must have it again,
            # as it must have the holds (`holds release` reads them there).
            loaded = await anyio.to_thread.run_sync(cli, cfg, "plan", "load",
                                                    str(kit.pool_path))
            assert loaded.returncode == 0, loaded.stderr
            with anyio.fail_after(60):
                while not list((cfg.work_dir / "planner" / "plans").glob("*.json")):
                    await anyio.sleep(0.1)
            await anyio.to_thread.run_sync(lambda: deliver([first], cfg.inbox))
            (consumer,) = daemon.consumers
            with anyio.fail_after(180):  # the group's first assignment comes first
                while not consumer.in_flight:
                    await anyio.sleep(0.05)
            killed_at = time.monotonic()
            os.kill(daemon.broker.process.pid, signal.SIGKILL)
            await anyio.to_thread.run_sync(lambda: deliver([second], cfg.inbox))
            with anyio.fail_after(60):  # the test's own reader needs a broker too
                while not daemon.supervisor.restarts:
                    await anyio.sleep(0.1)
            wanted = {exposure_id(first), exposure_id(second)}
            msgs = await wait_for(
                cfg, ["products"],
                lambda ms: {p["exposure_id"] for p in products(ms)} >= wanted, timeout=180)
            recovered_after = time.monotonic() - killed_at
            await wait_for(cfg, ["plans"], lambda ms: len(ms) >= 1, timeout=60)
            listed = await anyio.to_thread.run_sync(cli, cfg, "plan", "list")
            # Ready again once the rebuilt broker is known back and the planner has caught
            # up again: waited for, not read at one instant.
            with anyio.fail_after(120):
                while not (ready_now := daemon.readiness())[0]:
                    await anyio.sleep(0.2)
            ready, problems = ready_now
            # A run is counted once its product event's send has returned, after
            # a reader may see the event: the counts are read once no item is left.
            await until(lambda: metric(scrape(daemon.ops.address), "calstream_in_flight",
                                       stage="detector1") == 0)
            samples = scrape(daemon.ops.address)
            tg.cancel_scope.cancel()
    finally:
        daemon.stop_broker()
    supervisor = daemon.supervisor
    print(f"broker restarted and rebuilt in {supervisor.last_recovery:.1f}s; both products "
          f"announced {recovered_after:.1f}s after the SIGKILL")
    assert supervisor.restarts == 1 and daemon.broker.port == port
    assert metric(samples, "calstream_embedded_broker_restarts_total") == 1
    assert metric(samples, "calstream_broker_up") == 1
    assert ready, problems
    assert kit.pool_path.name in listed.stdout, listed
    # Each exposure calibrated once: the in-flight one, re-announced after the
    # restart, waited for its run and was found done.
    assert metric(samples, "calstream_stage_runs_total", stage="detector1",
                  outcome="success") == 2
    for eid in wanted:
        assert {p["event_id"] for p in products(msgs) if p["exposure_id"] == eid}.__len__() == 1


async def test_a_product_event_the_broker_does_not_acknowledge_is_parked_and_sent_later(
        tmp_path, kit, unique_prefix):
    """The broker stops answering (SIGSTOP, as a lost host) while a run goes
    on: its product event times out after broker_timeout_seconds. The record is
    retried (found done, the same event re-emitted) and, meanwhile, shown
    parked with its cause; the run is not done twice."""
    uncal = kit.uncal_files[0]
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, workers=1,
                            roles=["watcher", "detector1"], park_recheck_seconds=1.0,
                            **BROKER_TIMEOUT)
        async with running_daemon(cfg) as daemon:
            await anyio.to_thread.run_sync(lambda: deliver([uncal], cfg.inbox))
            (consumer,) = daemon.consumers
            with anyio.fail_after(120):
                while not consumer.in_flight:
                    await anyio.sleep(0.05)
            os.kill(own.process.pid, signal.SIGSTOP)
            try:
                with anyio.fail_after(120):
                    while metric(scrape(daemon.ops.address), "calstream_parked_items",
                                 stage="detector1", cause="broker_unreachable") < 1:
                        await anyio.sleep(0.2)
            finally:
                os.kill(own.process.pid, signal.SIGCONT)
            msgs = await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 1,
                                  timeout=120)
            with anyio.fail_after(60):
                while metric(scrape(daemon.ops.address), "calstream_parked_items") > 0:
                    await anyio.sleep(0.2)
            samples = scrape(daemon.ops.address)
    assert {p["event_id"] for p in products(msgs)}.__len__() == 1
    assert products(msgs)[0]["exposure_id"] == exposure_id(uncal)
    # One run, a success from its commit on; its own send failed, and the
    # retry found its product in the store and re-emitted that event (a
    # duplicate, not a second run; tests/unit/test_runner_counts.py).
    runs = {o: metric(samples, "calstream_stage_runs_total", stage="detector1", outcome=o)
            for o in ("success", "duplicate", "failed")}
    assert runs == {"success": 1, "duplicate": 1, "failed": 0}, runs
    assert metric(samples, "calstream_parked_total", cause="broker_unreachable") == 1
