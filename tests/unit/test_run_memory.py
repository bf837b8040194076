"""A run's memory is bounded while it goes (worker_run_memory_mb), not only
after it (worker_rss_limit_mb). Before, one runaway run (a forged NINTS x
NGROUPS that passes the door, a huge file) grew until the kernel's OOM killer
took it -- on Kubernetes with cgroup v2, the whole container with every other
run -- and the redelivered record took it down again at every restart. Now
the pool kills that run's worker alone, and the item is retried and then
dead-lettered with the reason. Real worker processes (tiny tasks)."""

import anyio
import pytest

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import RunOverMemory, WorkerPool
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.daemon.stages import daemon_workers
from calstream.steps.worker_memory import run_memory_bound_bytes
from tests.recording_bus import RecordingBus

NAME = "jw01234001001_02101_00001_nrcb1"
BOUND = 400 << 20  # far above a tiny task's worker, far below what the runaway takes


@pytest.fixture
def anyio_backend():
    return "asyncio"


def restarts(pool):
    return {s.labels["cause"]: s.value for m in pool.metrics.worker_restarts.collect()
            for s in m.samples if s.name.endswith("_total")}


@pytest.mark.anyio
async def test_a_run_over_its_bound_is_killed_while_it_goes_and_the_other_runs_go_on(tmp_path):
    pool = WorkerPool(2, stage="t", metrics=Metrics(), run_memory_bytes=BOUND)
    pool.start()
    gate = tmp_path / "gate"
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            async with anyio.create_task_group() as tg:
                other = {}

                async def beside():
                    other["outcome"] = await pool.run("tests.pool_tasks:wait_for_file",
                                                      {"path": str(gate)}, timeout=300)
                tg.start_soon(beside)
                with pytest.raises(RunOverMemory, match=r"more than a run may use \(400 MiB"):
                    # Held far longer than the test waits: only the bound ends it.
                    await pool.run("tests.pool_tasks:hold_memory", {"mb": 600, "seconds": 600},
                                   timeout=900)
                gate.touch()
        assert other["outcome"].failure is None  # the run beside it went on
        fine = await pool.run("tests.pool_tasks:hold_memory", {"mb": 50, "seconds": 0},
                              timeout=300)
        assert fine.failure is None and fine.value["held"] == 50 << 20
        assert restarts(pool) == {"run_memory": 1.0}
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_run_given_several_cores_counts_its_childrens_memory_against_its_cores():
    pool = WorkerPool(2, stage="t", metrics=Metrics(), run_memory_bytes=BOUND)
    pool.start()
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            with pytest.raises(RunOverMemory, match=r"more than a run may use \(800 MiB"):
                await pool.run("tests.pool_tasks:child_holds_memory", {"mb": 1000},
                               timeout=900, share_cores=lambda free, waiting: 2)
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_run_given_one_core_counts_the_processes_it_starts_anyway():
    """A step parameter ``maximum_cores`` (the operator's: steps/detector1.py
    keeps it) makes stcal start its processes in a run the pool gave one
    core. Their memory was not counted (only a run given several cores had
    its children read), and such a run outgrew its bound unseen: here the
    child holds 600 MiB for 30 s and the run ended well. Now it is killed
    as the bound says."""
    pool = WorkerPool(1, stage="t", metrics=Metrics(), run_memory_bytes=BOUND)
    pool.start()
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            with pytest.raises(RunOverMemory, match=r"more than a run may use \(400 MiB"):
                await pool.run("tests.pool_tasks:child_holds_memory",
                               {"mb": 600, "seconds": 30}, timeout=900)
    finally:
        pool.close()
    assert restarts(pool) == {"run_memory": 1.0}


@pytest.mark.anyio
async def test_a_runaway_item_is_retried_then_dead_lettered_with_the_reason(tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    cfg.max_attempts, cfg.retry_backoff = 2, 0.05
    metrics, bus, store = Metrics(), RecordingBus(), ProductStore(cfg.products)
    pool = WorkerPool(1, stage="detector1", metrics=metrics, run_memory_bytes=BOUND)
    pool.start()
    runner = WorkItemRunner(cfg, publisher=bus, store=store, pool=pool, metrics=metrics,
                            crds_context="jwst_0001.pmap")
    item = WorkItem(stage="detector1", pipeline="calwebb_detector1",
                    task="tests.pool_tasks:hold_memory", task_kwargs={"mb": 600, "seconds": 600},
                    program="01234", observation="001", name=NAME,
                    inputs=[{"path": "/in/u.fits", "digest": "sha256:" + "0" * 64}],
                    event_fields={"exposure_id": NAME})
    try:
        with anyio.fail_after(300):  # a bound for a loaded machine, not a measure
            await runner.run(item)
    finally:
        pool.close()
    [(topic, category, reason)] = bus.sent
    assert (topic, category) == ("deadletter", "retries_exhausted"), bus.sent
    assert "more than a run may use (400 MiB, worker_run_memory_mb)" in reason, reason
    assert restarts(pool) == {"run_memory": 2.0}  # each attempt, in a fresh worker


def test_the_default_bound_shares_the_daemons_memory_and_never_catches_a_full_frame_run():
    gib = 1 << 30
    # deploy/k8s/detector1.yaml: 12 GiB, two workers: both at their bound still fit.
    assert run_memory_bound_bytes(None, workers=2, memory=12 * gib) == int(12 * gib * 7 / 8) // 2
    # A full-frame detector1 run peaks near 2,800 MiB (steps/worker_memory.py).
    for memory in (None, 2 * gib, 8 * gib, 12 * gib):
        assert run_memory_bound_bytes(None, workers=5, memory=memory) >= 4096 << 20
    assert run_memory_bound_bytes(0, workers=2, memory=12 * gib) == 0  # no bound
    assert run_memory_bound_bytes(6000, workers=2, memory=12 * gib) == 6000 << 20


def test_the_daemons_workers_are_those_of_the_pools_it_runs(tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    cfg.workers, cfg.stage3_workers = 2, 1
    cfg.roles = ["detector1", "stage2", "stage3", "watcher"]
    assert daemon_workers(cfg) == 5
    cfg.roles = ["detector1"]
    assert daemon_workers(cfg) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("oom", [True, False], ids=["oom_killer", "kill_-9"])
async def test_a_worker_the_oom_killer_took_is_said_to_be_so(tmp_path, monkeypatch, oom):
    """Memory grown faster than the polls reaches the kernel's OOM killer:
    its SIGKILL read as any `kill -9`'s (`died (exit code -9)`). Now a worker
    found dead by SIGKILL while its cgroup's oom_kill count rose is said to
    be the OOM killer's; a plain kill -9 is not. The cgroup's files here
    stand in for /sys/fs/cgroup (real files, read as the kernel writes them)."""
    import os
    import signal
    from functools import partial

    from calstream.daemon.doers import process_memory, run_memory, worker_pool
    from calstream.daemon.doers.worker_pool import WorkerLost

    (tmp_path / "self_cgroup").write_text("0::/pod/calstream\n")
    events = tmp_path / "pod" / "calstream" / "memory.events"
    events.parent.mkdir(parents=True)
    events.write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    counted = partial(process_memory.oom_kills, root=tmp_path,
                      self_cgroup=tmp_path / "self_cgroup")
    monkeypatch.setattr(run_memory, "oom_kills", counted)
    monkeypatch.setattr(worker_pool, "oom_kills", counted)
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    pool.start()
    gate, lost = tmp_path / "gate", {}
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            async with anyio.create_task_group() as tg:
                async def run_it():
                    with pytest.raises(WorkerLost) as raised:
                        await pool.run("tests.pool_tasks:wait_for_file", {"path": str(gate)},
                                       timeout=300)
                    lost["reason"] = str(raised.value)
                tg.start_soon(run_it)
                while pool.busy < 1 or not pool._all or not pool._all[0].ready:
                    await anyio.sleep(0.01)
                # Ready: its first answer read, so its count read as it was sent.
                if oom:
                    events.write_text("low 0\nhigh 0\nmax 15\noom 2\noom_kill 2\n")
                os.kill(pool._all[0].process.pid, signal.SIGKILL)
    finally:
        pool.close()
    assert "died (exit code -9) during the task" in lost["reason"], lost
    assert ("killed by the kernel's OOM killer (its cgroup's oom_kill count went from 1 to 2)"
            in lost["reason"]) == oom, lost
