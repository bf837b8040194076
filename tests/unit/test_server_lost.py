"""A run whose worker died with the worker server (PDEATHSIG: the OOM killer
took the server, a hung one was killed) is the daemon's fault, not the
run's: an infrastructure fault, retried and parked, never a dead letter.
Before, it spent one of the item's attempts as any lost worker, and one on
its last attempt was dead-lettered `retries_exhausted`. A worker that dies
by itself (the server alive) is still a lost worker. Real worker processes
and the real worker server (tiny tasks)."""

import os
import signal

import anyio
import pytest

from calstream.daemon.deciders.retry_policy import AttemptCount
from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import ServerLost, WorkerLost, WorkerPool
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from tests.recording_bus import RecordingBus

NAME = "jw01234001001_02101_00001_nrcb1"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_a_run_whose_server_died_is_an_infrastructure_fault_not_an_attempt(tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    cfg.max_attempts = 1  # a lost worker on the last attempt is a dead letter
    metrics, bus, store = Metrics(), RecordingBus(), ProductStore(cfg.products)
    pool = WorkerPool(1, stage="detector1", metrics=metrics)
    pool.start()
    runner = WorkItemRunner(cfg, publisher=bus, store=store, pool=pool, metrics=metrics,
                            crds_context="jwst_0001.pmap")
    gate = tmp_path / "gate"
    item = WorkItem(stage="detector1", pipeline="calwebb_detector1",
                    task="tests.pool_tasks:wait_for_file_making", task_kwargs={"path": str(gate)},
                    program="01234", observation="001", name=NAME,
                    inputs=[{"path": "/in/u.fits", "digest": "sha256:" + "0" * 64}],
                    event_fields={"exposure_id": NAME})
    try:
        server = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value["ppid"]
        attempt = {}

        async def run_it():
            attempt["result"] = await runner._attempt(item, "w" * 64, store,
                                                      tmp_path / "run.log", AttemptCount())
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_it)
                while pool.busy < 1:
                    await anyio.sleep(0.01)
                os.kill(server, signal.SIGKILL)
        step, kind, detail, _ = attempt["result"]
        assert kind == "infrastructure:worker_server", (kind, detail)
        assert step.action == "park" and "worker server" in detail  # resumed by itself
        assert bus.sent == []  # no dead letter
        # A worker that dies by itself, its server alive, is a lost worker.
        with pytest.raises(WorkerLost) as lost:
            await pool.run("tests.pool_tasks:crash", {}, timeout=300)
        assert not isinstance(lost.value, ServerLost)
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_server_lost_attempt_is_not_counted_against_a_lost_worker(tmp_path):
    """Attempts lost with the server spend none of the item's attempts: a
    worker that dies by itself afterwards is retried as it would have been
    on a first attempt. Before, the lost server's attempt counted, and the
    next lost worker (max_attempts 2) was dead-lettered retries_exhausted."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    cfg.max_attempts, cfg.retry_backoff = 2, 0.05
    metrics, bus, store = Metrics(), RecordingBus(), ProductStore(cfg.products)
    pool = WorkerPool(1, stage="detector1", metrics=metrics)
    pool.start()
    runner = WorkItemRunner(cfg, publisher=bus, store=store, pool=pool, metrics=metrics,
                            crds_context="jwst_0001.pmap")
    item = WorkItem(stage="detector1", pipeline="calwebb_detector1",
                    task="tests.pool_tasks:server_lost_then_crash_then_rate",
                    task_kwargs={"counter": str(tmp_path / "runs"), "name": NAME},
                    program="01234", observation="001", name=NAME,
                    inputs=[{"path": "/in/u.fits", "digest": "sha256:" + "0" * 64}],
                    event_fields={"exposure_id": NAME})
    try:
        with anyio.fail_after(300):  # a bound for a loaded machine, not a measure
            await runner.run(item)
    finally:
        pool.close()
    assert (tmp_path / "runs").read_text() == "3"
    assert [s[0] for s in bus.sent] == ["products"], bus.sent


def test_without_proc_to_judge_by_a_lost_worker_stays_a_lost_worker(monkeypatch):
    """Where /proc cannot be read, every server would look gone, and every
    lost worker -- a run that crashes its worker each time among them --
    would be an infrastructure fault retried for good."""
    from calstream.daemon.doers import worker_server_watch

    assert not worker_server_watch.server_serving(2**22 + 12345)  # no such pid: gone
    monkeypatch.setattr(worker_server_watch, "server_state", lambda pid: None)
    assert worker_server_watch.server_serving(2**22 + 12345)
