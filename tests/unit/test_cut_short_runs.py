"""A run cut short with its daemon (the kernel's OOM killer taking the whole
container, as cgroup v2 does on Kubernetes; kill -9) is counted across the
daemon's restarts: a lost worker each, then a `retries_exhausted` dead
letter. Before, the restarted daemon ran the redelivered record again with
its attempts counted from zero: a run whose memory outgrew the pool's 0.2 s
polls took the container down at every restart, for ever. Only runs that
held a worker are counted; a run that ends as this process sees it (an
outcome, a graceful stop) leaves no mark. A real daemon process killed mid-run,
real worker processes (tiny tasks)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from tests.recording_bus import RecordingBus

NAME = "jw01234001001_02101_00001_nrcb1"
REPO = Path(__file__).resolve().parents[2]

# The daemon killed mid-run: one runner, one item, one worker.
DAEMON = """
import sys, anyio
from tests.unit.test_cut_short_runs import runner_and_pool, item
work_dir, mark, gate = sys.argv[1:4]
runner, pool = runner_and_pool(work_dir, max_attempts=3)
async def main():
    pool.start()
    await runner.run(item("tests.pool_tasks:mark_then_wait",
                          {"mark": mark, "gate": gate, "timeout": 600}))
anyio.run(main)
"""


@pytest.fixture
def anyio_backend():
    return "asyncio"


def runner_and_pool(work_dir, *, max_attempts, workers=1):
    cfg = load(None, env={}, flags={"work_dir": work_dir})
    cfg.max_attempts, cfg.retry_backoff = max_attempts, 0.05
    metrics, store = Metrics(), ProductStore(cfg.products)
    pool = WorkerPool(workers, stage="detector1", metrics=metrics)
    return WorkItemRunner(cfg, publisher=RecordingBus(), store=store, pool=pool, metrics=metrics,
                          crds_context="jwst_0001.pmap"), pool


def item(task, kwargs, n=0):
    """The same work (work id) whatever task stands for its calibration
    (``n``: another exposure's)."""
    name = f"jw01234001001_02101_{n + 1:05d}_nrcb1"
    return WorkItem(stage="detector1", pipeline="calwebb_detector1", task=task,
                    task_kwargs=kwargs, program="01234", observation="001", name=name,
                    inputs=[{"path": f"/in/{name}_uncal.fits", "digest": f"sha256:{n:064d}"}],
                    event_fields={"exposure_id": name})


def marks(runner):
    return sorted(runner.claims.directory.glob("*.runs"))


async def run(runner, pool, task, kwargs):
    pool.start()
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            await runner.run(item(task, kwargs))
    finally:
        pool.close()
    return runner.publisher.sent


def kill_a_daemon_mid_run(tmp_path, claims):
    """Once its run has begun in a worker (and marked it, where it is marked)."""
    mark, gate = tmp_path / "began", tmp_path / "gate"
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(tmp_path), str(mark), str(gate)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120  # a bound for a loaded machine, not a measure
        while not (mark.exists() and list(claims.directory.glob("*.runs"))):
            assert time.monotonic() < deadline, "its run never began, or was never marked"
            assert daemon.poll() is None, "the daemon ended before its run began"
            time.sleep(0.05)
    finally:
        daemon.send_signal(signal.SIGKILL)  # as the OOM killer ends a container
        daemon.wait()


@pytest.mark.anyio
async def test_runs_cut_short_with_their_daemon_end_in_a_dead_letter_not_a_loop(tmp_path):
    runner, pool = runner_and_pool(tmp_path, max_attempts=1)
    # Cut short once beside another run: a suspect, so its next run is alone.
    suspect = runner.claims.directory / f"{runner.work_id(item('x:y', {}))}.v1.runs"
    suspect.parent.mkdir(parents=True)
    suspect.write_text('{"began": 1, "alone": false}')
    kill_a_daemon_mid_run(tmp_path, runner.claims)
    [left] = marks(runner)
    assert json.loads(left.read_text()) == {"began": 1, "alone": True}
    sent = await run(runner, pool, "tests.pool_tasks:write_rate", {"name": NAME})
    [(topic, category, reason)] = sent  # not run again: no product
    assert (topic, category) == ("deadletter", "retries_exhausted"), sent
    assert "its last 1 run(s) were cut short with the daemon" in reason, reason
    assert marks(runner) == []  # a redrive of it runs


@pytest.mark.anyio
async def test_a_run_cut_short_once_is_run_again_and_an_ended_run_leaves_no_mark(tmp_path):
    runner, pool = runner_and_pool(tmp_path, max_attempts=2)
    left = runner.claims.directory / f"{runner.work_id(item('x:y', {}))}.v1.runs"
    left.parent.mkdir(parents=True)
    left.write_text('{"began": 1}')  # as the killed daemon above leaves it
    sent = await run(runner, pool, "tests.pool_tasks:write_rate", {"name": NAME})
    assert [topic for topic, *_ in sent] == ["products"], sent
    assert marks(runner) == []


@pytest.mark.anyio
async def test_a_run_a_graceful_stop_ends_is_not_cut_short(tmp_path):
    runner, pool = runner_and_pool(tmp_path, max_attempts=1)
    mark = tmp_path / "began"
    pool.start()
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run, item("tests.pool_tasks:mark_then_wait",
                                               {"mark": str(mark), "gate": str(tmp_path / "g")}))
                while not (mark.exists() and marks(runner)):
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()  # the daemon's stop
    finally:
        pool.close()
    assert marks(runner) == []


def test_a_run_that_ends_between_two_cut_short_clears_the_count(tmp_path):
    """Marks count runs cut short *in a row*: a run that ended in between
    (an outcome, a lost worker, a store fault after it) clears the count, so
    its retry's mark starts from one. Before, the retry wrote the count read
    at the item's start plus one: a daemon killed during it found the earlier
    daemons' runs counted again."""
    from calstream.daemon.doers.work_claims import WorkClaims
    from calstream.daemon.doers.work_item_runs import CutShortRuns

    runs = CutShortRuns(WorkClaims(tmp_path, heartbeat_seconds=1.0, stale_seconds=5.0),
                        "ab" * 32, 1)
    runs.path.parent.mkdir(parents=True)
    runs.path.write_text('{"began": 2}')  # two daemons ended during its runs
    assert runs.read() == 2
    runs.began()
    runs.ended()  # this one ended as its process saw it
    assert not runs.path.exists()
    runs.began()  # its retry, cut short in turn (the mark is all that stays)
    for marking in runs._marking:
        marking.join()
    assert json.loads(runs.path.read_text()) == {"began": 1, "alone": False}


@pytest.mark.anyio
async def test_runs_cut_short_beside_others_are_not_counted_and_run_alone(tmp_path):
    """Two runs in workers when the container goes: neither is counted
    against its item (either may be innocent), even at max_attempts 1; each
    runs again alone, and both are products. Before, both were counted:
    after max_attempts such ends in a row, the innocent run was
    dead-lettered with the runaway one."""
    runner, pool = runner_and_pool(tmp_path, max_attempts=1, workers=2)
    runner.claims.directory.mkdir(parents=True)
    for n in range(2):  # as a daemon killed during both leaves them
        (runner.claims.directory / f"{runner.work_id(item('x:y', {}, n))}.v1.runs").write_text(
            '{"began": 1, "alone": false}')
    pool.start()
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            async with anyio.create_task_group() as tg:
                for n in range(2):
                    tg.start_soon(runner.run, item("tests.pool_tasks:write_rate",
                                                   {"name": item("x:y", {}, n).name}, n))
    finally:
        pool.close()
    sent = runner.publisher.sent
    assert sorted(topic for topic, *_ in sent) == ["products", "products"], sent
    assert marks(runner) == []


@pytest.mark.anyio
async def test_a_suspect_runs_alone():
    """A suspect's run waits for the runs held to end, and the runs that come
    after it wait for its end (work_item_runs.Solitude)."""
    from calstream.daemon.doers.work_item_runs import solitude

    order, first_in = [], anyio.Event()

    async def shared(name, hold=None):
        async with solitude().run(alone=False):
            order.append(f"{name} in")
            if hold is not None:
                hold.set()
            await anyio.sleep(0.1)
            order.append(f"{name} out")

    async def suspect():
        async with solitude().run(alone=True):
            order.append("suspect in")
            await anyio.sleep(0.1)
            order.append("suspect out")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(shared, "a", first_in)
            await first_in.wait()
            tg.start_soon(suspect)
            await anyio.sleep(0.01)
            tg.start_soon(shared, "b")
    assert order == ["a in", "a out", "suspect in", "suspect out", "b in", "b out"]
