"""The worker server heals itself, off the event loop (worker_server_watch.py):
a server that died is started again while the loop goes on, a stopped one
is killed and started again, one whose socket is gone too, and a start that
fails (EMFILE) is retried and parked, never the run's failure. Real
processes and multiprocessing's real forkserver; the scenarios that would
freeze the old code for good run in a process of their own, with a bound."""

import os
import shutil
import signal
import subprocess
import sys
from multiprocessing import forkserver
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.doers.worker_server_watch import started_server_pid
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics
from tests.processes import alive

ROOT = Path(__file__).resolve().parents[2]
# The tests' modules (tests.pool_tasks) for the scripts, before whatever was there.
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get(
    "PYTHONPATH")]))}
QUICK = Config(max_attempts=3, retry_backoff=0.05, park_recheck_seconds=0.2)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _restarts(pool: WorkerPool) -> dict[str, float]:
    return {s.labels["cause"]: s.value for m in pool.metrics.worker_server_restarts.collect()
            for s in m.samples if s.name.endswith("_total")}


@pytest.mark.anyio
async def test_the_server_s_pid_is_where_the_watch_reads_it():
    """The watch reads the server's pid from CPython's private
    ``forkserver._forkserver._forkserver_pid``: a Python that renames it
    fails here, not silently in production (nothing would be judged hung)."""
    assert hasattr(forkserver._forkserver, "_forkserver_pid")
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    pool.start()
    try:
        seen = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
    finally:
        pool.close()
    assert started_server_pid() == seen["ppid"] != os.getpid()


def _importing(old_server: int) -> bool:
    """A new server runs and has forked nothing yet: its jwst import goes on."""
    pid = started_server_pid()
    if pid in (None, old_server) or not alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return not f.read().split()
    except OSError:
        return False


@pytest.mark.anyio
async def test_a_killed_server_is_started_again_while_the_event_loop_runs_on():
    """SIGKILLed (the OOM killer, an operator): its idle worker dies with it,
    and the next run starts a new server. Before, that start ran on the
    event loop and froze it for the new server's jwst import; and the idle
    worker's death failed the run that was handed to it."""
    pool = WorkerPool(1, stage="t", metrics=Metrics(), faults=QUICK)
    pool.start()
    importing, done = [0], [False]

    async def tick(old_server: int):
        # Counts the loop's turns while the new server imports (no clock read).
        while not done[0]:
            importing[0] += _importing(old_server)
            await anyio.sleep(0.05)
    try:
        before = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
        restarts = _restarts(pool)
        os.kill(before["ppid"], signal.SIGKILL)
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            while alive(before["pid"]):
                await anyio.sleep(0.05)
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick, before["ppid"])
            try:
                after = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
            finally:
                done[0] = True
    finally:
        pool.close()
    assert after["ppid"] != before["ppid"] and after["jwst_imported"]
    # The import takes seconds: a loop frozen meanwhile sees it once at most.
    assert importing[0] >= 5, importing
    assert _restarts(pool).get("died", 0) == restarts.get("died", 0) + 1


@pytest.mark.anyio
async def test_a_server_whose_socket_is_gone_is_killed_and_started_again():
    """A temporary-file cleaner may remove the server's socket and its
    directory: the server lives on and refuses every start, and a new one
    cannot bind its socket in a directory that is gone. Before, the replacement's start raised
    FileNotFoundError out of the run (not WorkerLost: the consumer took the
    run's record for a broker or disk fault) and the pool kept one worker less."""
    pool = WorkerPool(1, stage="t", metrics=Metrics(), faults=QUICK)
    pool.start()
    try:
        before = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
        restarts = _restarts(pool)
        # What a temporary-file cleaner does: the socket and its directory
        # (multiprocessing's own, made once per process).
        shutil.rmtree(Path(forkserver._forkserver._forkserver_address).parent)
        with pytest.raises(WorkerLost):
            await pool.run("tests.pool_tasks:crash", {}, timeout=300)  # a replacement is due
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            after = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
    finally:
        pool.close()
    assert after["ppid"] != before["ppid"] and not alive(before["ppid"])
    assert _restarts(pool).get("unreachable", 0) == restarts.get("unreachable", 0) + 1


_STOPPED_SERVER = """
import os, signal, anyio
from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics

async def main():
    pool = WorkerPool(1, stage="t", metrics=Metrics(), server_hung_seconds=1.0,
                      faults=Config(max_attempts=3, retry_backoff=0.05, park_recheck_seconds=0.2))
    pool.start()
    try:
        before = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
        os.kill(before["ppid"], signal.SIGSTOP)  # stopped: alive, and forks nothing
        try:
            await pool.run("tests.pool_tasks:crash", {}, timeout=300)  # a replacement is due
        except WorkerLost:
            pass
        after = (await pool.run("tests.pool_tasks:origin", {}, timeout=300)).value
    finally:
        pool.close()
    restarts = {s.labels["cause"]: s.value for m in pool.metrics.worker_server_restarts.collect()
                for s in m.samples if s.name.endswith("_total")}
    print(after["ppid"] != before["ppid"], after["jwst_imported"], restarts)

if __name__ == "__main__":  # the workers import this file as their main module
    anyio.run(main)
"""


def test_a_stopped_server_is_killed_and_a_new_one_serves(tmp_path):
    """A server alive but stopped (SIGSTOP; stuck in D state) forks nothing:
    a start waited for it forever, on the event loop (the whole daemon
    frozen). Now a server that uses no CPU for ``server_hung_seconds`` while
    a start waits is killed, and a new one serves the run."""
    script = tmp_path / "stopped_server.py"
    script.write_text(_STOPPED_SERVER)
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=300, cwd=ROOT, env=_ENV)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the pool never got a worker from a stopped server: {exc.stderr}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "True True {'hung': 1.0}", out.stdout
    assert "used no CPU for 1s while a worker's start waited" in out.stderr, out.stderr[-3000:]


_NO_FILES_LEFT = """
import os, resource, anyio
from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics

def parked(pool):
    return sum(s.value for m in pool.metrics.parked.collect() for s in m.samples
               if s.labels.get("cause") == "worker_start")

async def main():
    pool = WorkerPool(1, stage="t", metrics=Metrics(),
                      faults=Config(max_attempts=2, retry_backoff=0.05, park_recheck_seconds=0.2))
    pool.start()
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        await pool.run("tests.pool_tasks:add", {"a": 1, "b": 1}, timeout=300)
        # No file descriptor left: the replacement's pipe cannot be made
        # (EMFILE). A new descriptor takes the lowest free number: the limit.
        used = {int(fd) for fd in os.listdir("/proc/self/fd")}
        lowest_free = min(set(range(len(used) + 1)) - used)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, limits[1]))
        try:
            await pool.run("tests.pool_tasks:crash", {}, timeout=300)
        except WorkerLost:
            lost = "lost"
        result = []
        async with anyio.create_task_group() as tg:
            async def run():
                result.append(await pool.run("tests.pool_tasks:add", {"a": 2, "b": 2}, timeout=300))
            tg.start_soon(run)
            with anyio.fail_after(120):
                while not parked(pool):  # waits, parked: not failed
                    await anyio.sleep(0.02)
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)  # the fault clears
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        pool.close()
    print(lost, result[0].value["sum"], parked(pool))

if __name__ == "__main__":  # the workers import this file as their main module
    anyio.run(main)
"""


def test_a_start_that_fails_is_retried_and_parked_and_the_run_waits_for_it(tmp_path):
    """EMFILE at a replacement's start: before, the error escaped from the
    run that lost its worker (not a WorkerLost) and the pool kept one worker
    less for good. Now the start is retried, parked
    (calstream_parked_items{cause="worker_start"}) and resumes by itself; the
    next run waits for it and runs."""
    script = tmp_path / "no_files_left.py"
    script.write_text(_NO_FILES_LEFT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["lost", "4", "0.0"], out.stdout
    assert "parked on an infrastructure fault (worker_start)" in out.stderr, out.stderr[-3000:]
    assert "resumed after" in out.stderr, out.stderr[-3000:]


_IDLE_WORKER_WHILE_PARKED = """
import os, resource, anyio
from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics

def parked(pool):
    return sum(s.value for m in pool.metrics.parked.collect() for s in m.samples
               if s.labels.get("cause") == "worker_start")

async def main():
    pool = WorkerPool(2, stage="t", metrics=Metrics(),
                      faults=Config(max_attempts=2, retry_backoff=0.05, park_recheck_seconds=0.2))
    pool.start()
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        await pool.fill()  # both workers warm
        used = {int(fd) for fd in os.listdir("/proc/self/fd")}
        lowest_free = min(set(range(len(used) + 1)) - used)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, limits[1]))
        try:
            await pool.run("tests.pool_tasks:crash", {}, timeout=300)
        except WorkerLost:
            pass
        # Its replacement cannot start (EMFILE) and parks; the other worker is idle.
        result = []
        async with anyio.create_task_group() as tg:
            async def run():
                result.append(await pool.run("tests.pool_tasks:add", {"a": 2, "b": 2}, timeout=300))
            tg.start_soon(run)
            with anyio.fail_after(120):  # a bound for a loaded machine
                while not result and not parked(pool):
                    await anyio.sleep(0.02)
            stalled = not result
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)  # the fault clears
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        pool.close()
    print("stalled" if stalled else result[0].value["sum"])

if __name__ == "__main__":  # the workers import this file as their main module
    anyio.run(main)
"""


def test_a_run_takes_an_idle_worker_while_a_replacement_s_start_is_parked(tmp_path):
    """A replacement whose start fails (parked: EMFILE) held up every run of
    the pool, its live idle workers left idle: a stage with one worker lost
    stalled as if every worker were. Now a run takes an idle worker first;
    the owed ones are started when a run finds none idle."""
    script = tmp_path / "idle_worker_while_parked.py"
    script.write_text(_IDLE_WORKER_WHILE_PARKED)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["4"], out.stdout


def _parked(pool: WorkerPool) -> float:
    return sum(s.value for m in pool.metrics.parked.collect() for s in m.samples
               if s.labels.get("cause") == "worker_start")


@pytest.mark.anyio
async def test_a_pool_closed_while_its_start_is_parked_stops_starting():
    """A start parked (here its arguments do not pickle, as any start that
    fails for good) went on after the pool's close: a start every
    park_recheck_seconds (each a new worker, ended at once, once the fault
    cleared), the fill never over and worker_start shown parked for a pool
    that was gone. Now the fill ends with the pool."""
    import threading

    pool = WorkerPool(1, stage="t", metrics=Metrics(), env={"UNPICKLED": threading.Lock()},
                      faults=QUICK)
    pool.start()
    filled = anyio.Event()

    async def fill():
        await pool.fill()
        filled.set()
    async with anyio.create_task_group() as tg:
        tg.start_soon(fill)
        with anyio.fail_after(120):  # a bound for a loaded machine
            while not _parked(pool):
                await anyio.sleep(0.02)
        await anyio.to_thread.run_sync(pool.close)
        with anyio.move_on_after(30):  # a bound: its next try is 0.2 s away
            await filled.wait()
        tg.cancel_scope.cancel()
    assert filled.is_set()
    assert _parked(pool) == 0
