"""A second consumer joins the group and leaves while a run is in flight
(issue 13): eager rebalancing revokes every partition and gives it back, the
record is fetched again from the committed offset, and it must not start a
second run: it waits for the first and finds it done.

The same daemon run shows /readyz after an idle period: the daemon idles
longer than its stall_seconds, then a run starts and /readyz stays ready (a
stall is measured from the item's start, not from the last item finished); the
worker, truly stuck (SIGSTOP), then makes /readyz not ready past the limit."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.stages import stage
from calstream.steps.synthetic.downlink import deliver
from calstream.topics.catalog import Topics

from .support import (
    WARM_AT_START,
    daemon_config,
    metric,
    products,
    running_daemon,
    scrape,
    wait_for,
    worker_processes,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Long enough that the first /readyz after a run starts surely comes before
# the limit, even on a loaded machine.
STALL_SECONDS = 8.0


def readyz(address: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def until_ready(address: str, code: int) -> dict:
    with anyio.fail_after(120):
        while (got := await anyio.to_thread.run_sync(readyz, address))[0] != code:
            await anyio.sleep(0.1)
    return got[1]


async def test_a_rebalance_mid_run_does_not_start_a_second_run(tmp_path, broker, kit,
                                                               unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix, workers=1,
                        roles=["watcher", "detector1"], stall_seconds=STALL_SECONDS,
                        **WARM_AT_START)  # the worker is frozen before the first item
    raw = Topics(cfg.topic_prefix).name("raw")
    started = time.monotonic()
    async with running_daemon(cfg) as daemon:
        (loop,) = daemon.consumers
        address = daemon.ops.address
        await until_ready(address, 200)
        # Idle longer than the stall limit: nothing finished since the start.
        # (A start slower than that on a loaded machine: no wait left, not an error.)
        await anyio.sleep(max(0.0, STALL_SECONDS + 1 - (time.monotonic() - started)))
        assert (await anyio.to_thread.run_sync(readyz, address))[0] == 200
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
            # A run starts after the idle period: no false stall.
            code, doc = await anyio.to_thread.run_sync(readyz, address)
            assert code == 200, doc
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
            # The worker is truly stuck: past the stage's limit, not ready.
            doc = await until_ready(address, 503)
            # (Two or three items: the join and the leave may each hand it back.)
            assert any(p.startswith("detector1: ") and "item(s) in flight and none finished"
                       in p for p in doc["problems"]), doc
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        msgs = await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 2, timeout=120)
        with anyio.fail_after(60):
            while loop.in_flight:
                await anyio.sleep(0.1)
        await until_ready(address, 200)  # ready again once the run is through
        samples = scrape(daemon.ops.address)
    assert metric(samples, "calstream_stage_runs_total", stage="detector1", outcome="success") == 1
    # Found done once per time it came back (the join and the leave may each
    # revoke and return its partition).
    assert metric(samples, "calstream_stage_runs_total", stage="detector1",
                  outcome="duplicate") >= 1
    # The same event both times (re-emitted with its event id).
    assert len({p["event_id"] for p in products(msgs)}) == 1
