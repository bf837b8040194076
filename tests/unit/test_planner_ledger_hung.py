"""The planner's ledger on a work directory whose storage stops answering (a
hard NFS mount whose server is away): its reads and writes ran in anyio's
threads, untimed, and a write that never returned held the planner's task
for ever, unseen (its loop still beat: /healthz alive, /readyz ready, no
metric), and a stop of the daemon waited for that thread for ever. Now a
call past its time parks the planner (work_dir_hung), it goes on by itself
once the mount answers, in its records' order, and a stop ends meanwhile.
(A real thread held until the test lets it go, real files.)"""

import os
import threading
from functools import partial

import anyio
import pytest

from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.planner_publishing import keep
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics

pytestmark = pytest.mark.anyio
NAME = "jw01234001001_02101_00001_nrcb1"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def silent(tmp_path, monkeypatch):
    """The work directory's mount, silent until ``answers`` is set: a
    directory made under it blocks (in the thread that makes it)."""
    work = tmp_path / "work"
    answers, blocked = threading.Event(), []
    real = os.mkdir

    def mkdir(path, *args, **kw):
        if os.fspath(path).startswith(os.fspath(work)) and not answers.is_set():
            blocked.append(path)
            answers.wait(20)  # a bound for a broken test, not a measure
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    yield work, answers, blocked
    answers.set()


def parked(metrics: Metrics) -> float:
    return metrics.parked.labels(stage="planner", cause="work_dir_hung", root="")._value.get()


def setup(work):
    cfg = load(None, env={}, flags={"work_dir": work, "max_attempts": 2,
                                    "retry_backoff": 0.01, "park_recheck_seconds": 0.05})
    return cfg, Metrics(), PlannerLedger(work, seconds=0.2)


async def test_a_silent_work_dir_parks_the_planner_which_goes_on_in_order(silent):
    work, answers, blocked = silent
    cfg, metrics, ledger = setup(work)

    async def two_states():
        await keep(ledger, "holds", {"exposure_id": NAME, "state": "held"}, cfg=cfg,
                   metrics=metrics)
        await keep(ledger, "holds", {"exposure_id": NAME, "state": "released"}, cfg=cfg,
                   metrics=metrics)

    async with anyio.create_task_group() as tg:
        tg.start_soon(two_states)
        with anyio.fail_after(10):
            while parked(metrics) < 1:
                await anyio.sleep(0.02)
        with anyio.fail_after(10):  # parked after its time wherever its thread was
            while not blocked:
                await anyio.sleep(0.02)
        assert not ledger.kept("holds", tidy=False)
        answers.set()  # the mount answers
    assert parked(metrics) == 0
    assert [h["state"] for h in ledger.kept("holds")] == ["released"]
    assert metrics.parked_total.labels(stage="planner", cause="work_dir_hung")._value.get() == 1


async def test_a_stop_while_the_work_dir_is_silent_ends(silent):
    work, answers, blocked = silent
    cfg, metrics, ledger = setup(work)
    with anyio.fail_after(10):  # a bound for a broken test: the stop below ends at once
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(keep, ledger, "plans", {"plan_id": "p1", "exposures": []},
                                  cfg=cfg, metrics=metrics))
            while not blocked:
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()  # the daemon's stop
    assert not answers.is_set() and parked(metrics) == 0
