"""A run's own child processes (``subprocess``: what a step or a plugin may
start; stcal's pools are multiprocessing's, armed by children_die_with_me)
end with its worker, whichever way the pool loses or ends it: the worker
leads a process group of its own and the pool kills the group once the
worker has ended. Before, a worker killed (by the kernel's OOM killer, the
memory bound, a time-out, a stop) left such children running, orphaned, for
as long as they liked: the memory the bound had just freed taken again.
Real worker processes, a real child (``sleep``)."""

import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations.metrics import Metrics

TASKS = "tests.unit.test_worker_children"


def starts_a_child(pids, output_dir=None):
    """Start a child that would outlive the run, say both pids, then wait."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    Path(pids + ".part").write_text(f"{os.getpid()} {child.pid}")
    os.replace(pids + ".part", pids)
    time.sleep(600)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie its new parent has not reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def started(pids: Path) -> tuple[int, int]:
    while not pids.exists():
        await anyio.sleep(0.05)
    worker, child = map(int, pids.read_text().split())
    return worker, child


def gone(pid: int) -> bool:
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a measure
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


@pytest.mark.anyio
async def test_a_child_of_a_run_ends_with_its_worker_killed(tmp_path):
    """The kernel's OOM killer takes the worker alone (SIGKILL): a lost worker,
    and its run's child killed with it."""
    pool = WorkerPool(1, stage="detector1", metrics=Metrics())
    pool.start()
    pids = tmp_path / "pids"
    child = None
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            async with anyio.create_task_group() as tg:
                async def kill_the_worker():
                    nonlocal child
                    worker, child = await started(pids)
                    os.kill(worker, signal.SIGKILL)
                tg.start_soon(kill_the_worker)
                with pytest.raises(WorkerLost):
                    await pool.run(f"{TASKS}:starts_a_child", {"pids": str(pids)}, timeout=600)
        assert gone(child), "the run's child outlived its killed worker"
    finally:
        pool.close()
        if child is not None and running(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.anyio
async def test_a_child_of_a_cancelled_run_ends_with_its_worker(tmp_path):
    """The daemon's stop cancels the run (its worker SIGTERMed, then killed):
    its child too."""
    pool = WorkerPool(1, stage="detector1", metrics=Metrics())
    pool.start()
    pids = tmp_path / "pids"
    child = None
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: pool.run(f"{TASKS}:starts_a_child", {"pids": str(pids)},
                                               timeout=600))
                _, child = await started(pids)
                tg.cancel_scope.cancel()
        pool.close()
        assert gone(child), "the run's child outlived its cancelled run's worker"
    finally:
        pool.close()
        if child is not None and running(child):
            os.kill(child, signal.SIGKILL)


class _EndedLongAgo:
    """A worker's process that ended while idle and was reaped long before
    the pool came to replace it (found dead at its next turn, at an idle
    return or at the daemon's stop): its pid is free, and another process
    may hold it by then."""

    def __init__(self, pid: int) -> None:
        self.pid, self.exitcode = pid, -signal.SIGKILL

    def join(self, timeout=None) -> None:
        pass

    def is_alive(self) -> bool:
        return False

    def terminate(self) -> None:
        pass

    def kill(self) -> None:
        pass


def _replaced_as_died(pool: WorkerPool, pid: int) -> None:
    """The pool told that its worker of ``pid`` (ended long ago) died."""
    from calstream.daemon.doers.worker_lifecycle import Worker

    reader, writer = __import__("multiprocessing").Pipe(duplex=False)
    writer.close()
    dead = Worker("w-dead", _EndedLongAgo(pid), reader, tasks_left=1)
    pool._all.append(dead)
    pool._replace(dead, "died")


def test_a_worker_found_ended_long_ago_spares_the_process_that_took_its_pid():
    """The pool kills the group of a worker once it has ended and been
    reaped; a worker found dead long after (its pid free all that while)
    may have its pid taken again by another process leading its own group:
    another worker (each leads one), a session's shell. Before, that
    group was SIGKILLed as the dead worker's, an innocent run with it. A
    process under that pid now is never the ended worker's, and while its
    orphaned children live no process can take the pid: that group is
    left alone."""
    import subprocess

    # Stands for the process that took the pid: it leads a group of its own.
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    pool = WorkerPool(1, stage="detector1", metrics=Metrics())
    try:
        _replaced_as_died(pool, other.pid)
        pool.close()  # waits for the worker's end (its reaping thread)
        assert running(other.pid), "the group of the process that took an ended worker's pid " \
            "was killed"
    finally:
        other.kill()
        other.wait()


def test_a_worker_reaped_by_nobody_yet_still_has_its_group_killed(tmp_path):
    """Its server gone (the OOM killer), a worker is reparented and dies
    (PDEATHSIG); the pool knows its end before its new parent reaps it: a
    zombie under its pid, which is no other process's. Its run's child in
    its group is killed as any orphan's."""
    import subprocess

    pids = tmp_path / "child"
    # A group leader that ends (not reaped: a zombie), its child left in the group.
    leader = subprocess.Popen(["sh", "-c", f"sleep 600 & echo $! > {pids}.part; "
                                           f"mv {pids}.part {pids}"], start_new_session=True)
    while not pids.exists() or running(leader.pid):
        time.sleep(0.05)
    child = int(pids.read_text())
    pool = WorkerPool(1, stage="detector1", metrics=Metrics())
    try:
        _replaced_as_died(pool, leader.pid)
        pool.close()
        assert gone(child), "the child of a worker not reaped yet outlived it"
    finally:
        leader.wait()
        if running(child):
            os.kill(child, signal.SIGKILL)
