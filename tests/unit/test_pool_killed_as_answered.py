"""A worker its run's checks kill (time-out, memory bound, stopped) just as
its answer arrives whole is replaced, never kept or handed another run.

The watch beside the read of an answer (worker_answers.received) may kill
the worker while the read goes on; a read that then ends well returns the
answer. Before session 44 the pool counted the run done and kept the killed
worker: idle for the next run, or handed the run waiting (_hand_over), whose
innocent item then spent one of its attempts on a lost worker. The run's
answer, whole, still counts: the run finished.

Driven directly, in this order and no other: a real pipe (a socket pair, as
the pool's) holding half an answer, a real process as the worker, and a
watch that makes the pool's own check (a time-out of 0: it kills the
process) and only then lets the rest of the answer through."""

import logging
import multiprocessing
import pickle
import struct
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import wait

import anyio
import pytest

from calstream.daemon.doers.worker_lifecycle import Worker
from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations.metrics import Metrics


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _worker(name):
    """A worker of a real process (one that only waits, to be killed) and a
    real pipe; with the far end of the pipe, which the test writes to."""
    mine, its = Pipe()
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(600,))
    process.start()
    return Worker(name, process, mine, tasks_left=10), its


def _answer_in_two_halves(answer):
    data = pickle.dumps(answer)
    assert len(data) > 2000  # else the first half is all of it
    whole = struct.pack("!i", len(data)) + data
    return whole[:1000], whole[1000:]


def _kills_then_answers(pool, its, rest, *, first=None):
    """The pool's own watch of a read, which sends the rest of the answer
    once it has killed the worker (after ``first`` is set, if given)."""
    check = pool._run_ends

    def watch(*args, **kwargs):
        if first is not None:
            first.wait(60)
        why = check(*args, **kwargs)
        if why is not None and kwargs.get("kill"):
            its._send(rest)  # all in the reader's socket before the read is ended
        return why
    return watch


def _restarts(pool):
    return {s.labels["cause"]: s.value for m in pool.metrics.worker_restarts.collect()
            for s in m.samples if s.name.endswith("_total")}


@pytest.mark.anyio
async def test_a_run_whose_worker_is_killed_as_its_answer_comes_counts_and_the_worker_goes(
        monkeypatch, caplog):
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    doomed, its = _worker("t-doomed")
    pool._all.append(doomed)
    pool._idle.append(doomed)
    half, rest = _answer_in_two_halves(("ok", {"products": "x" * 5000}, 0, 0, (0.0, 0.0)))
    its._send(half)
    monkeypatch.setattr(pool, "_run_ends", _kills_then_answers(pool, its, rest))
    try:
        with anyio.fail_after(60), caplog.at_level(logging.WARNING, logger="calstream.pool"):
            outcome = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 2}, timeout=0)
        assert outcome.value == {"products": "x" * 5000} and outcome.failure is None
        assert doomed not in pool._idle and doomed not in pool._all, "the killed worker is kept"
        assert _restarts(pool) == {"timeout": 1.0}
        assert ("worker t-doomed exceeded the task timeout of 0s and was killed; its answer had "
                "come whole and counts; the worker is replaced") in caplog.messages
        assert wait([doomed.process.sentinel], 30), "the worker lives on"  # it ended (killed)
    finally:
        pool.close()
        its.close()


@pytest.mark.anyio
async def test_a_worker_killed_as_it_says_it_is_warm_is_lost_as_the_check_found(monkeypatch):
    """Its run never began: lost for the time-out (not "died"), and replaced."""
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    doomed, its = _worker("t-doomed")
    pool._all.append(doomed)
    pool._idle.append(doomed)
    half, rest = _answer_in_two_halves(("ready", 12345, "x" * 5000))
    its._send(half)
    monkeypatch.setattr(pool, "_run_ends", _kills_then_answers(pool, its, rest))
    try:
        with anyio.fail_after(60), pytest.raises(WorkerLost) as lost:
            await pool.run("tests.pool_tasks:add", {"a": 1, "b": 2}, timeout=0)
        assert "exceeded the task timeout of 0s" in str(lost.value)
        assert doomed not in pool._all and _restarts(pool) == {"timeout": 1.0}
    finally:
        pool.close()
        its.close()


@pytest.mark.anyio
async def test_a_worker_killed_as_its_answer_comes_is_not_handed_the_run_waiting(monkeypatch):
    """The run waiting goes to another worker (here an idle spare), not to
    the killed one: before, it was sent to the killed worker and lost."""
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    spare, its_spare = _worker("t-spare")
    doomed, its = _worker("t-doomed")
    pool._all += [spare, doomed]
    pool._idle += [spare, doomed]  # the first run takes the last
    half, rest = _answer_in_two_halves(("ok", "a" * 5000, 0, 0, (0.0, 0.0)))
    its._send(half)
    its_spare.send(("ok", "b's", 0, 0, (0.0, 0.0)))
    b_waits = threading.Event()
    monkeypatch.setattr(pool, "_run_ends", _kills_then_answers(pool, its, rest, first=b_waits))
    results = {}

    async def run(name, timeout):
        try:
            results[name] = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 2},
                                           timeout=timeout, still_needed=lambda: True)
        except WorkerLost as exc:
            results[name] = exc

    try:
        with anyio.fail_after(60):  # a bound for a loaded machine, not a measure
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "a", 0)
                while pool.busy < 1:
                    await anyio.sleep(0.01)
                tg.start_soon(run, "b", 60)
                while pool.waiting < 1:
                    await anyio.sleep(0.01)
                b_waits.set()
        assert results["a"].value == "a" * 5000
        assert not isinstance(results["b"], WorkerLost), results["b"]
        assert results["b"].value == "b's" and results["b"].worker == "t-spare"
        assert doomed not in pool._all and pool._idle == [spare]
        assert _restarts(pool) == {"timeout": 1.0}
    finally:
        pool.close()
        its.close()
        its_spare.close()
