"""A second consumer joins the group and leaves while a run is in flight
(issue 13): eager rebalancing revokes every partition and gives it back, the
record is fetched again from the committed offset, and it must not start a
second run: it waits for the first and finds it done."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.stages import stage
from calstream.steps.synthetic.downlink import deliver
from calstream.topics.catalog import Topics

from .support import daemon_config, metric, products, running_daemon, scrape, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def worker_processes() -> list[int]:
    """This process's children other than the session's tansu: the warm workers."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
            if int(fields["PPid"]) == os.getpid() and "tansu" not in fields["Name"]:
                pids.append(int(status.parent.name))
    return pids


async def test_a_rebalance_mid_run_does_not_start_a_second_run(tmp_path, broker, kit,
                                                               unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix, workers=1,
                        roles=["watcher", "detector1"])
    raw = Topics(cfg.topic_prefix).name("raw")
    async with running_daemon(cfg) as daemon:
        (loop,) = daemon.consumers
        # Freeze the warm worker so that the run is surely in flight throughout.
        workers = worker_processes()
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            await anyio.to_thread.run_sync(lambda: deliver(kit.uncal_files[:1], cfg.inbox))
            with anyio.fail_after(60):
                while not loop.in_flight:
                    await anyio.sleep(0.05)
            # A second member joins (eager rebalance: everything revoked and
            # reassigned), takes nothing, and leaves (everything comes back).
            other = kafka.group_consumer(cfg, stage("detector1").group(cfg.group_prefix))
            other.subscribe([raw])
            await other.start()
            try:
                with anyio.fail_after(60):
                    while not other.assignment():
                        await anyio.sleep(0.1)
            finally:
                await other.stop()
            # The uncommitted record comes back and is handed over again: two items
            # in flight for one run.
            with anyio.fail_after(60):
                while loop.in_flight < 2:
                    await anyio.sleep(0.1)
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        msgs = await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 2, timeout=120)
        with anyio.fail_after(60):
            while loop.in_flight:
                await anyio.sleep(0.1)
        samples = scrape(daemon.ops.address)
    assert metric(samples, "calstream_stage_runs_total", stage="detector1", outcome="success") == 1
    # Found done once per time it came back (the join and the leave may each
    # revoke and return its partition).
    assert metric(samples, "calstream_stage_runs_total", stage="detector1",
                  outcome="duplicate") >= 1
    # The same event both times (re-emitted with its event id).
    assert len({p["event_id"] for p in products(msgs)}) == 1
