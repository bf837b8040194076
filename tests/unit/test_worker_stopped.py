"""A run whose worker is stopped (SIGSTOP; a frozen cgroup) is ended after
a grace and tried again in another worker, as a lost worker's run. Before,
the stopped worker held its exposure and its turn at a worker until the task
time-out (an hour). A worker that is only slow (waiting, with no CPU used)
or stopped for a moment is never ended for it. Real worker processes (tiny
tasks); the judgement is pure (deciders/work_stops.py)."""

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import anyio
import pytest

from calstream.daemon.deciders.work_stops import Stop, judge_stop
from calstream.daemon.doers.process_memory import children_of
from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool, WorkerStopped
from calstream.daemon.doers.worker_stopped import _frozen_cgroup, run_state, stopped_too_long
from calstream.daemon.operations.metrics import Metrics

TASKS = "tests.unit.test_worker_stopped"


def half_an_answer_then(what):
    """In a worker: the length of a whole answer on the pipe and a part of
    it (an answer of many parts is written in several), then ``what``: stop
    (SIGSTOP) or hang."""
    import gc
    import struct
    import time
    from multiprocessing.connection import Connection

    [conn] = [o for o in gc.get_objects() if isinstance(o, Connection) and not o.closed]
    conn._send(struct.pack("!i", 100_000) + b"\x80\x05" + b"\0" * 1000)
    if what == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(600)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def restarts(pool):
    return {s.labels["cause"]: s.value for m in pool.metrics.worker_restarts.collect()
            for s in m.samples if s.name.endswith("_total")}


async def worker_pid_once_busy(pool):
    while pool.busy < 1 or not pool._all or not pool._all[0].ready:
        await anyio.sleep(0.01)
    return pool._all[0].process.pid


@pytest.mark.anyio
async def test_a_stopped_worker_is_replaced_long_before_the_time_out_and_the_next_run_goes(
        tmp_path):
    pool = WorkerPool(1, stage="t", metrics=Metrics(), stopped_seconds=1.0)
    pool.start()
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine; the time-out is 900 s
            async with anyio.create_task_group() as tg:
                lost = {}

                async def run_it():
                    with pytest.raises(WorkerStopped) as raised:
                        await pool.run("tests.pool_tasks:wait_for_file",
                                       {"path": str(tmp_path / "never"), "timeout": 900},
                                       timeout=900)
                    lost["reason"] = str(raised.value)
                tg.start_soon(run_it)
                pid = await worker_pid_once_busy(pool)
                os.kill(pid, signal.SIGSTOP)
        assert "stopped (state T: a stop signal)" in lost["reason"], lost
        assert restarts(pool) == {"stopped": 1.0}
        with anyio.fail_after(120):
            fine = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 2}, timeout=300)
        assert fine.value["sum"] == 3 and fine.worker != "t-1"  # a fresh worker took the next run
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_slow_worker_or_one_stopped_for_a_moment_is_never_ended(tmp_path):
    """Waiting (state S, its CPU time unchanged) far longer than the grace is
    slow, not stopped; a stop lifted before the grace starts the count again."""
    pool = WorkerPool(1, stage="t", metrics=Metrics(), stopped_seconds=1.0)
    pool.start()
    gate = tmp_path / "gate"
    try:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                done = {}

                async def run_it():
                    done["outcome"] = await pool.run("tests.pool_tasks:wait_for_file",
                                                     {"path": str(gate)}, timeout=900)
                tg.start_soon(run_it)
                pid = await worker_pid_once_busy(pool)
                await anyio.sleep(2.5)  # slow: more than two graces, waiting

                def stopped_a_moment(times=3):
                    for _ in range(times):
                        os.kill(pid, signal.SIGSTOP)
                        time.sleep(0.1)
                        os.kill(pid, signal.SIGCONT)
                        time.sleep(0.1)
                await anyio.to_thread.run_sync(stopped_a_moment)
                gate.touch()
        assert done["outcome"].failure is None and done["outcome"].value["pid"] == pid
        assert restarts(pool) == {}
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_run_whose_child_is_stopped_is_ended_without_a_memory_bound_too(tmp_path):
    """A run's children were looked for only by the memory bound's check
    (run_memory.over_bound): with ``worker_run_memory_mb: 0`` none was ever
    found, and a run whose stcal child was stopped (its worker waiting, state
    S) held its turn until the time-out, as before session 44's check."""
    pool = WorkerPool(1, stage="t", metrics=Metrics(), stopped_seconds=1.0)  # no memory bound
    pool.start()
    pid_file, child = tmp_path / "child.pid", None
    try:
        with anyio.fail_after(60):  # a bound for a loaded machine; the time-out is 900 s
            async with anyio.create_task_group() as tg:
                lost = {}

                async def run_it():
                    with pytest.raises(WorkerStopped) as raised:
                        await pool.run("tests.pool_tasks:start_child_and_hang",
                                       {"pid_file": str(pid_file)}, timeout=900)
                    lost["reason"] = str(raised.value)
                tg.start_soon(run_it)
                while not pid_file.exists() or not pid_file.read_text():
                    await anyio.sleep(0.05)
                child = int(pid_file.read_text())
                os.kill(child, signal.SIGSTOP)
        assert f"waiting for its child {child}, which is stopped" in lost["reason"], lost
        assert restarts(pool) == {"stopped": 1.0}
    finally:
        pool.close()
        if child is not None:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("then", ["stop", "hang"])
@pytest.mark.anyio
async def test_a_worker_stopped_or_hung_with_its_answer_half_sent_is_ended_too(then):
    """The read of an answer that has begun is watched as the run is: before,
    it waited for the rest for ever, past the stop's grace and the time-out."""
    pool = WorkerPool(1, stage="t", metrics=Metrics(), stopped_seconds=1.0)
    pool.start()
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            with pytest.raises(WorkerStopped if then == "stop" else WorkerLost) as lost:
                await pool.run(f"{TASKS}:half_an_answer_then", {"what": then},
                               timeout=900 if then == "stop" else 3)
        assert ("stopped (state T" if then == "stop" else "exceeded the task timeout of 3s") \
            in str(lost.value)
        assert restarts(pool) == {"stopped" if then == "stop" else "timeout": 1.0}
    finally:
        pool.close()


def test_a_stopped_worker_whose_children_compute_is_said_once_not_at_every_look(caplog):
    """A worker stopped (kill -STOP of its pid) while its run's children go
    on computing: their CPU time moves, so the stop is counted again from
    each look (deciders/work_stops.py) -- and its WARNING "is stopped
    mid-run: it is killed ... if it is still so in 60s" was written again
    at each look too, five a second, as if a new stop. Said once; a stop of
    another kind (how) is said again."""
    worker = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
        "time.sleep(600)\n")])
    try:
        while not (children := children_of(worker.pid)):
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGSTOP)
        request = SimpleNamespace(stop=None, children=children,
                                  children_scanned_at=time.monotonic())
        with caplog.at_level(logging.INFO, logger="calstream.pool"):
            for _ in range(8):
                assert stopped_too_long(worker, "w", request, grace=600) is None
                time.sleep(0.1)  # ten clock ticks of the child's CPU
        said = [r.getMessage() for r in caplog.records if "mid-run: it is killed" in r.message]
        assert len(said) == 1, said
    finally:
        for pid in children_of(worker.pid):
            os.kill(pid, signal.SIGKILL)
        worker.kill()
        worker.wait()


def test_a_stop_counts_only_while_it_lasts_without_cpu_progress():
    stop, end = judge_stop(None, how="stopped", cpu=7, now=10.0, grace=5.0)
    assert stop == Stop(10.0, 7, "stopped") and not end
    assert judge_stop(stop, how="stopped", cpu=7, now=14.9, grace=5.0) == (stop, False)
    assert judge_stop(stop, how="stopped", cpu=7, now=15.0, grace=5.0) == (stop, True)
    # It went on between two looks (its CPU moved): counted again from now.
    assert judge_stop(stop, how="stopped", cpu=8, now=15.0, grace=5.0) == (
        Stop(15.0, 8, "stopped"), False)
    assert judge_stop(stop, how=None, cpu=7, now=99.0, grace=5.0) == (None, False)
    assert judge_stop(stop, how="stopped", cpu=7, now=99.0, grace=0) == (stop, False)


def test_the_state_of_a_process_and_its_cgroup_are_read_from_proc(tmp_path):
    how, cpu = run_state(os.getpid())
    assert how is None and cpu > 0
    assert run_state(2**22 + 12345) == (None, 0)  # gone: neither stopped nor counted
    lines = open("/proc/self/cgroup").read().splitlines()
    v2 = [line.split("::", 1)[1] for line in lines if line.startswith("0::")]
    v1 = [line.split(":", 2)[2] for line in lines
          if "freezer" in line.split(":", 2)[1].split(",")]
    if not (v2 or v1):
        pytest.skip("no cgroup here")
    files = [(tmp_path / v2[0].lstrip("/") / "cgroup.events", "populated 1\nfrozen {}\n",
              ("1", "0"), v2[0])] if v2 else []
    files += [(tmp_path / "freezer" / v1[0].lstrip("/") / "freezer.state", "{}\n",
               ("FROZEN", "THAWED"), v1[0])] if v1 else []
    for path, text, (frozen, thawed), where in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(frozen))
        assert _frozen_cgroup(os.getpid(), tmp_path) == where
        path.write_text(text.format(thawed))
        assert _frozen_cgroup(os.getpid(), tmp_path) is None
