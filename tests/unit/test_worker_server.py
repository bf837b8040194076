"""Workers are forks of one warm server process (worker_forkserver.py,
worker_server.py): none imports jwst itself, the server forks with one
thread, a worker takes the daemon's environment as it is at the worker's
start, and a SIGKILLed daemon takes the server and the workers along."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations.metrics import Metrics
from tests.processes import alive

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _run_each(pool: WorkerPool, fn: str, kwargs: dict, n: int) -> list:
    values = []

    async def one():
        values.append((await pool.run(fn, kwargs, timeout=300)).value)
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return values


@pytest.mark.anyio
async def test_every_pool_s_workers_are_forks_of_one_warm_single_threaded_server():
    pools = [WorkerPool(2, stage="a", metrics=Metrics()), WorkerPool(1, stage="b", metrics=Metrics())]
    try:
        for pool in pools:
            pool.start()
        seen = [*await _run_each(pools[0], "tests.pool_tasks:origin", {}, 2),
                *await _run_each(pools[1], "tests.pool_tasks:origin", {}, 1)]
    finally:
        for pool in pools:
            pool.close()
    assert len({s["pid"] for s in seen}) == 3
    parents = {s["ppid"] for s in seen}
    assert len(parents) == 1 and os.getpid() not in parents, seen
    # Warm on arrival, though these pools have no initializer: the server's import, frozen.
    assert all(s["jwst_imported"] and s["frozen"] > 0 for s in seen), seen
    # A fork copies one thread: the server must not hold a lock in another.
    assert all(s["parent_threads"] == 1 for s in seen), seen


@pytest.mark.anyio
async def test_a_worker_takes_the_daemon_s_environment_as_it_is_at_the_worker_s_start(
        monkeypatch):
    monkeypatch.setenv("CALSTREAM_TEST_EARLY", "gone before the worker started")
    first = WorkerPool(1, stage="a", metrics=Metrics())
    first.start()
    try:
        await first.run("tests.pool_tasks:origin", {}, timeout=300)  # the server runs now
    finally:
        first.close()
    monkeypatch.setenv("CALSTREAM_TEST_LATE", "set after the server started")
    monkeypatch.delenv("CALSTREAM_TEST_EARLY", raising=False)
    pool = WorkerPool(1, stage="b", metrics=Metrics(), env={"CALSTREAM_TEST_POOL": "pool"})
    pool.start()
    try:
        late = await pool.run("tests.pool_tasks:env", {"name": "CALSTREAM_TEST_LATE"}, timeout=300)
        own = await pool.run("tests.pool_tasks:env", {"name": "CALSTREAM_TEST_POOL"}, timeout=300)
        early = await pool.run("tests.pool_tasks:env", {"name": "CALSTREAM_TEST_EARLY"},
                               timeout=300)
    finally:
        pool.close()
    assert late.value["value"] == "set after the server started"
    assert own.value["value"] == "pool"
    assert early.value["value"] is None


_DAEMON = """
import sys, anyio
from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations.metrics import Metrics

pool = WorkerPool(2, stage="t", metrics=Metrics())
pool.start()

async def busy():  # calibrating when the daemon dies: nothing asks it to stop
    seen = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
    print(seen["pid"], seen["ppid"], flush=True)
    await pool.run("tests.pool_tasks:sleep", {"seconds": 600}, timeout=900)

async def main():
    async with anyio.create_task_group() as tg:
        tg.start_soon(busy)
        tg.start_soon(busy)

anyio.run(main)
"""


def test_a_sigkilled_daemon_takes_the_server_and_its_workers_along():
    daemon = subprocess.Popen([sys.executable, "-c", _DAEMON], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        lines = [daemon.stdout.readline().split() for _ in range(2)]
        time.sleep(0.5)  # both on their long task (had they not started it, no matter)
        assert all(len(line) == 2 for line in lines), lines
        pids = {int(p) for line in lines for p in line}
        assert daemon.pid not in pids  # the workers' parent is the server, not the daemon
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
    finally:
        if daemon.poll() is None:
            daemon.kill()
    deadline = time.monotonic() + 60  # a bound for a loaded machine, not a measure
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)], "the server or a worker outlived the daemon"


@pytest.mark.anyio
async def test_a_killed_server_takes_its_workers_along_and_the_pool_starts_a_new_one():
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    pool.start()
    try:
        before = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
        os.kill(before["ppid"], signal.SIGKILL)  # the OOM killer, an operator
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            while alive(before["pid"]):
                await anyio.sleep(0.05)
        lost = 0
        while True:  # the idle worker's death is found at its next task
            try:
                after = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
                break
            except WorkerLost:
                lost += 1
                assert lost < 3
    finally:
        pool.close()
    assert after["ppid"] != before["ppid"] and after["jwst_imported"]


@pytest.mark.anyio
async def test_a_process_that_started_workers_can_still_start_a_daemon():
    """What the pool leaves in the environment (the server's parent) is no
    setting: a daemon started with that environment (the integration tests
    start daemons from a process that ran pools) must not refuse it."""
    from calstream.daemon.operations import config

    pool = WorkerPool(1, stage="t", metrics=Metrics())
    pool.start()
    try:
        await pool.run("tests.pool_tasks:origin", {}, timeout=300)
    finally:
        pool.close()
    config.load(env=dict(os.environ))


_LOOP_DURING_START = """
import anyio
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.metrics import Metrics

async def main():
    ticks, done = [0], [False]
    async def tick():
        while not done[0]:
            ticks[0] += 1
            await anyio.sleep(0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        await anyio.sleep(0.1)
        pool = WorkerPool(1, stage="t", metrics=Metrics())
        before = ticks[0]
        pool.start()
        await pool.fill()
        during = ticks[0] - before
        value = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
        done[0] = True
        pool.close()
    print(during, value["jwst_imported"])

if __name__ == "__main__":
    anyio.run(main)
"""


def test_a_first_pool_start_leaves_the_event_loop_running(tmp_path):
    """A new server forks nothing before its preload (jwst) is imported, and
    a worker's start waits for that fork: started on the event loop, the
    first pool froze it for the whole import (seconds: the broker clients'
    heartbeats, the operations endpoint, the watcher). In a fresh process
    (no server yet), the loop ticks on while the server warms up."""
    script = tmp_path / "loop_during_start.py"
    script.write_text(_LOOP_DURING_START)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    during, warm = out.stdout.split()
    # Importing jwst takes seconds; a loop frozen meanwhile ticks once at most.
    assert int(during) >= 5 and warm == "True", out.stdout
