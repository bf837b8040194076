"""Two daemons sharing a product store never run one work item twice
(issue 13; doers/work_claims.py).

In production the same record reaches a second daemon when its partition
moves while the first still runs it. Here the second daemon consumes the raw
topic in a group of its own, so it surely gets the record too (no waiting for a
rebalance to land one way or the other): whichever daemon claims the work
first runs it; the other waits without a worker and then finds it done. Then a
claim held by another process that stops beating (SIGSTOP) is taken over once
it is stale. Short heartbeat and stale bounds are set in config; nothing is
timed, the test only waits for states.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.steps.synthetic.downlink import deliver
from calstream.topics.catalog import Topics

from .support import WARM_AT_START, daemon_config, metric, running_daemon, scrape, worker_processes

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# A claim holder in another process: the same claim file a daemon writes,
# touched every 0.05 s until it is stopped.
HOLDER = """
import json, os, socket, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                         "token": "holder"}).encode())
os.close(fd)
print("held", flush=True)
while True:
    time.sleep(0.05)
    os.utime(path)
"""


def total(daemons, name: str, **labels) -> float:
    return sum(metric(scrape(d.ops.address), name, stage="detector1", **labels) for d in daemons)


async def until(predicate, timeout: float = 180) -> None:
    with anyio.fail_after(timeout):
        while not await anyio.to_thread.run_sync(predicate):
            await anyio.sleep(0.1)


async def republish_raw(cfg) -> None:
    """Put the raw record on its topic again: what a record fetched again from
    the committed offset looks like to a stage."""
    raw = Topics(cfg.topic_prefix).name("raw")
    with anyio.fail_after(60):
        records = kafka.read_topics(cfg, [raw])
        record, _msg = await records.__anext__()
        await records.aclose()
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        await producer.send_and_wait(raw, record.value, key=record.key)
    finally:
        await producer.stop()


async def test_two_daemons_run_a_work_item_once_and_take_over_a_stale_claim(
        tmp_path, broker, kit, unique_prefix):
    store = tmp_path / "products"
    # Stale bound well above the heartbeat: a loaded machine must not make a
    # live claim look stale. At 3 s a CI run (session 23) saw the second
    # daemon take over the first one's fresh claim too, after a stall of the
    # test process's loop, which beats both daemons' claims.
    common = {"workers": 1, "products": store, "inbox": tmp_path / "inbox",
              "claim_heartbeat_seconds": 0.2, "claim_stale_seconds": 8.0, **WARM_AT_START}
    a_cfg = daemon_config(tmp_path / "a", broker, unique_prefix,
                          roles=["watcher", "detector1"], **common)
    b_cfg = daemon_config(tmp_path / "b", broker, unique_prefix, roles=["detector1"],
                          group_prefix=unique_prefix.rstrip(".") + "-b", **common)
    claims = store / ".claims"
    async with running_daemon(a_cfg) as a, running_daemon(b_cfg) as b:
        daemons = (a, b)
        # Freeze both daemons' warm workers: the first run stays in flight.
        workers = worker_processes()
        assert len(workers) >= 2
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            await anyio.to_thread.run_sync(lambda: deliver(kit.uncal_files[:1], a_cfg.inbox))
            # One daemon holds the claim (its run in its frozen worker); the other waits.
            await until(lambda: total(daemons, "calstream_claims_waited_total") == 1)
            # Beside it, the mark of its run in a worker (doers/work_item_runs.py).
            (claim,) = [p for p in claims.iterdir() if not p.name.endswith(".runs")]
            assert total(daemons, "calstream_stage_runs_total") == 0  # nothing finished
            assert sum(loop.in_flight for d in daemons for loop in d.consumers) == 2
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        # The holder's run finishes; the waiter claims the work and finds it done.
        await until(lambda: total(daemons, "calstream_stage_runs_total", outcome="duplicate") == 1)
        assert total(daemons, "calstream_stage_runs_total", outcome="success") == 1
        # The waiter counts its duplicate while it still holds the claim: released just after.
        await until(lambda: not claim.exists())

        # A claim held by another process, which then stops beating.
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(claim)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert await anyio.to_thread.run_sync(holder.stdout.readline) == "held\n"
            await republish_raw(a_cfg)  # both daemons get the record again
            await until(lambda: total(daemons, "calstream_claims_waited_total") == 3)
            assert total(daemons, "calstream_claims_taken_over_total") == 0
            holder.send_signal(signal.SIGSTOP)
            # Stale: exactly one daemon takes it over; both find the work done.
            await until(lambda: total(daemons, "calstream_stage_runs_total",
                                      outcome="duplicate") == 3)
        finally:
            holder.kill()
            holder.wait()
            holder.stdout.close()
        assert total(daemons, "calstream_claims_taken_over_total") == 1
        assert total(daemons, "calstream_stage_runs_total", outcome="success") == 1
        await until(lambda: not any(claims.iterdir()))
    assert Path(claim).name.endswith(".v1")
