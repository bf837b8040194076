"""A worker's next task starts from the thread that gets its result, not from
the event loop (issue 15): real worker processes, tiny tasks. The event loop
is held on purpose (a synchronous wait inside the test's coroutine), as a
busy daemon's loop would be: what must happen without it still happens."""

import os
import time

import anyio
import pytest

from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.metrics import Metrics


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _hold_the_loop_until(path, timeout=30.0) -> bool:
    """Block the event loop (no await) until ``path`` exists."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def _until(condition) -> None:
    with anyio.fail_after(30):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_a_waiting_task_starts_when_the_worker_is_done_even_while_the_loop_is_busy(tmp_path):
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    pool.start()
    await pool.fill()  # started now: the loop is held below
    gate, started = tmp_path / "gate", tmp_path / "b"
    results = {}

    async def run(name, fn, kwargs, **kw):
        results[name] = await pool.run(fn, kwargs, timeout=60, **kw)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a", "tests.pool_tasks:wait_for_file", {"path": str(gate)})
            await _until(lambda: pool.busy == 1)
            asked = []
            tg.start_soon(lambda: run("b", "tests.pool_tasks:rendezvous",
                                      {"directory": str(tmp_path), "me": "b", "other": "b"},
                                      still_needed=lambda: asked.append(1) or True))
            await _until(lambda: pool.waiting == 1)
            gate.touch()
            # The first task ends, and the second starts, with the loop held.
            assert _hold_the_loop_until(started)
            assert asked == [1]  # "still needed?" asked once, by the hand-over
        assert results["b"].value["met"] and results["a"].value["pid"] == results["b"].value["pid"]
        assert pool.busy == 0 and pool.waiting == 0 and pool.workers_started == 1
        again = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 2}, timeout=30)
        assert again.value == {"sum": 3, "pid": results["a"].value["pid"]}
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_task_started_by_a_hand_over_then_cancelled_ends_with_its_worker(tmp_path):
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    pool.start()
    await pool.fill()  # started now: the loop is held below
    gate, started = tmp_path / "gate", tmp_path / "b"
    try:
        first = await pool.run("tests.pool_tasks:add", {"a": 0, "b": 0}, timeout=60)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: pool.run("tests.pool_tasks:wait_for_file",
                                           {"path": str(gate)}, timeout=60))
            await _until(lambda: pool.busy == 1)
            scope = anyio.CancelScope()

            async def waiting():
                with scope:  # waits for `never`: runs until cancelled
                    await pool.run("tests.pool_tasks:rendezvous",
                                   {"directory": str(tmp_path), "me": "b", "other": "never",
                                    "timeout": 60}, timeout=120)
            tg.start_soon(waiting)
            await _until(lambda: pool.waiting == 1)
            gate.touch()
            assert _hold_the_loop_until(started)
            scope.cancel()  # the caller gives up on a task already running
        assert pool.busy == 0 and pool.waiting == 0
        # Its worker was ended (its state unknown) and the pool has one again.
        after = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 1}, timeout=60)
        assert after.value["sum"] == 2 and after.value["pid"] != first.value["pid"]
        assert pool.workers_started == 1
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_still_needed_check_that_fails_in_the_hand_over_fails_its_own_task(tmp_path):
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    pool.start()
    await pool.fill()  # its worker started before the first task
    gate = tmp_path / "gate"

    def unreadable_store():
        raise OSError("store unreadable")

    failed = []

    async def doomed():
        try:
            await pool.run("tests.pool_tasks:add", {"a": 1, "b": 1}, timeout=60,
                           still_needed=unreadable_store)
        except OSError as exc:
            failed.append(str(exc))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: pool.run("tests.pool_tasks:wait_for_file",
                                           {"path": str(gate)}, timeout=60))
            await _until(lambda: pool.busy == 1)
            tg.start_soon(doomed)
            await _until(lambda: pool.waiting == 1)
            gate.touch()
        assert failed == ["store unreadable"]
        assert pool.busy == 0 and pool.waiting == 0
        ok = await pool.run("tests.pool_tasks:add", {"a": 2, "b": 2}, timeout=30)
        assert ok.value["sum"] == 4
    finally:
        pool.close()


@pytest.mark.anyio
async def test_each_task_started_by_a_hand_over_gets_and_reports_its_own_cores(tmp_path):
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    pool.start()
    await pool.fill()  # its worker started before the first task
    gate = tmp_path / "gate"
    results = {}

    async def run(name, fn, kwargs, cores):
        results[name] = await pool.run(fn, kwargs, timeout=60,
                                       share_cores=lambda free, waiting: cores)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a", "tests.pool_tasks:wait_for_file", {"path": str(gate)}, 2)
            await _until(lambda: pool.busy == 1)
            tg.start_soon(run, "b", "tests.pool_tasks:cores_given", {}, 3)
            await _until(lambda: pool.waiting == 1)
            gate.touch()
        assert results["a"].cores == 2  # not the next task's, though it started first
        assert results["b"].cores == 3 and results["b"].value["cores"] == 3
        assert pool.free_cores == 1
    finally:
        pool.close()
