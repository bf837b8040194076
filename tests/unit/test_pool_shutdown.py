"""The worker pool ends its workers cleanly: a daemon's shutdown, a cancelled
or timed-out run, a retired worker leave no named semaphore behind, so
multiprocessing's resource tracker has nothing to warn about ("There appear
to be N leaked semaphore objects to clean up at shutdown", which `make demo`
printed once workers held crds's lock and were killed mid-task)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Its own interpreter: the resource tracker speaks when the process that
# started it exits. The workers hold a named semaphore, as crds's import makes
# one in every spawned worker (multiprocessing.Lock() under the spawn method).
_SCRIPT = """
import anyio
from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations.metrics import Metrics

pool = WorkerPool(1, stage="t", metrics=Metrics(), max_tasks_per_worker=2,
                  initializer="tests.pool_tasks:hold_a_named_lock")
pool.start()

async def main():
    first = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 1}, timeout=60)
    second = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 1}, timeout=60)  # retired
    try:
        await pool.run("tests.pool_tasks:sleep", {"seconds": 60}, timeout=1)
    except WorkerLost:
        pass
    third = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 1}, timeout=60)
    assert second.value["pid"] == first.value["pid"] != third.value["pid"]
    with anyio.move_on_after(2):  # shutdown with a run under way
        await pool.run("tests.pool_tasks:sleep", {"seconds": 60}, timeout=60)

anyio.run(main)
pool.close()
warming = WorkerPool(1, stage="t", metrics=Metrics(),
                     initializer="tests.pool_tasks:hold_a_named_lock_then_warm_up_slowly")
warming.start()
anyio.run(warming.fill)  # started: its initializer runs on
import time
time.sleep(1)  # the lock is taken, the warm-up goes on
warming.close()
print("closed")
"""


def test_workers_ended_in_every_way_leave_no_leaked_semaphore():
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "closed" in done.stdout
    assert "leaked" not in done.stderr, done.stderr
