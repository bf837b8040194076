"""The planner's restore reads the product store's stage-3 records (the next
versions are numbered from them) on a store whose storage stops answering (a
hard NFS mount whose server is away): read in anyio's threads, untimed, the
start waited for ever, unseen, and a stop of the daemon waited for the
thread. Now the planner parks (store_hung) and goes on by itself once the
store answers; a stop ends meanwhile. (A real thread held until the test
lets it go, real files.)"""

import os
import threading
from functools import partial

import anyio
import pytest

from calstream.daemon.doers import planner_disk_records
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.topics.catalog import Topics

pytestmark = pytest.mark.anyio
HELD = 10.0  # how long a silent call is held at most: a bound for a broken test


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def silent_store(tmp_path, monkeypatch):
    """A product store with one stage-3 record file, whose mount is silent
    until ``answers`` is set: a file opened under it blocks (in the thread
    opening it); ``returned`` once such a call has returned."""
    store = tmp_path / "work" / "products"  # the default store of that work directory
    record = store / "jw01234" / "jw01234-o001" / ".provenance" / "a.stage3.json"
    record.parent.mkdir(parents=True)
    record.write_text("{}")  # no record calstream writes: left out once read
    answers, blocked, returned = threading.Event(), [], []
    real = os.open

    def open_(path, *args, **kw):
        if os.fspath(path).startswith(os.fspath(store)) and not answers.is_set():
            blocked.append(path)
            answers.wait(HELD)
            returned.append(path)
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(planner_disk_records, "STORE_SECONDS", 0.2, raising=False)
    yield tmp_path, answers, blocked, returned
    answers.set()


def planner_at(tmp_path) -> Planner:
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "max_attempts": 2,
                                    "retry_backoff": 0.01, "park_recheck_seconds": 0.05})
    return Planner(cfg, publisher=None, metrics=Metrics(), topics=Topics())


def parked_total(planner) -> float:
    return planner.metrics.parked_total.labels(stage="planner", cause="store_hung")._value.get()


async def test_a_silent_store_parks_the_restore_which_goes_on_once_it_answers(silent_store):
    tmp_path, answers, blocked, _ = silent_store
    planner = planner_at(tmp_path)
    with anyio.fail_after(HELD / 2):  # untimed, it waited for the store (HELD), unseen
        async with anyio.create_task_group() as tg:
            tg.start_soon(planner_disk_records.restore_from_disk, planner)
            while parked_total(planner) < 1:
                await anyio.sleep(0.02)
            assert len(blocked) == 1  # one thread left on the silent store, not one a try
            answers.set()  # the store answers
    assert planner.metrics.parked.labels(stage="planner", cause="store_hung",
                                         root="")._value.get() == 0


async def test_a_stop_while_the_store_is_silent_ends(silent_store):
    tmp_path, answers, blocked, returned = silent_store
    planner = planner_at(tmp_path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(planner_disk_records.restore_from_disk, planner))
        while not blocked:
            await anyio.sleep(0.02)
        tg.cancel_scope.cancel()  # the daemon's stop
    assert not returned  # ended without waiting for the store
