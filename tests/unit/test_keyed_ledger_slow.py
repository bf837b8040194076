"""The planner's ledger and the dead-letter ledger on slow storage that
works (a busy NFS server: each file answers, late). Their reads were timed
as one call of a minute: thousands of files took longer, the read was
called hung (work_dir_hung), and every try began again from the first
file, so the planner stayed parked (and the start waiting for the dead
letters) for as long as the ledger stayed that size. Now a read is hung
once no file has answered in its time (KeyedLedger.kept's ``answered``,
FileReads.listing), so a slow ledger is read and a silent one still parks.
(Real files; each read slowed, or held, in its real thread.)"""

import os
import threading
import time
from types import SimpleNamespace

import anyio
import pytest

from calstream.daemon.doers import planner_ledger
from calstream.daemon.doers.dead_letter_ledger import DeadLetterLedger
from calstream.daemon.doers.file_reads import FileReads
from calstream.daemon.doers.planner_disk_records import ledger_read
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.recovery_reads import RecoveryReads as _Timed
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics

pytestmark = pytest.mark.anyio
SECONDS = 1.0  # the reads' time: each file below answers well within it
FILES = 8
EACH = 0.25  # a file's read: FILES of them take twice SECONDS


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def slow(monkeypatch):
    """Each ledger file read answers after EACH seconds."""
    real = planner_ledger.read_regular_file

    def read(path, *args, **kw):
        time.sleep(EACH)
        return real(path, *args, **kw)

    monkeypatch.setattr(planner_ledger, "read_regular_file", read)


def planner(work):
    cfg = load(None, env={}, flags={"work_dir": work, "max_attempts": 2,
                                    "retry_backoff": 0.01, "park_recheck_seconds": 0.05})
    return SimpleNamespace(cfg=cfg, metrics=Metrics(),
                           ledger=PlannerLedger(work, seconds=SECONDS))


def parked_total(metrics: Metrics) -> float:
    return metrics.parked_total.labels(stage="planner", cause="work_dir_hung")._value.get()


def holds(ledger: PlannerLedger) -> None:
    for n in range(FILES):
        ledger.keep("holds", {"exposure_id": f"jw01234001001_02101_{n + 1:05d}_nrcb1",
                              "state": "held"})


async def test_a_slow_planners_ledger_is_read_not_parked_for_ever(tmp_path, slow):
    own = planner(tmp_path / "work")
    holds(own.ledger)
    with anyio.fail_after(30):  # a bound for a broken test (main: parked for ever)
        read = await ledger_read(own, own.ledger.kept, "holds")
    assert len(read) == FILES and parked_total(own.metrics) == 0


async def test_a_silent_planners_ledger_still_parks_and_is_read_once_it_answers(
        tmp_path, monkeypatch):
    own = planner(tmp_path / "work")
    holds(own.ledger)
    answers, real = threading.Event(), os.listdir

    def listdir(path=".", *args):
        if os.fspath(path).startswith(os.fspath(own.ledger.root)) and not answers.is_set():
            answers.wait(20)  # a bound for a broken test, not a measure
        return real(path, *args)

    monkeypatch.setattr(os, "listdir", listdir)
    found = []

    async def read():
        found.extend(await ledger_read(own, own.ledger.kept, "holds"))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            with anyio.fail_after(10):
                while parked_total(own.metrics) < 1:
                    await anyio.sleep(0.02)
            assert not found
            answers.set()  # the mount answers
    finally:
        answers.set()
    assert len(found) == FILES


async def test_a_slow_dead_letter_ledger_is_read_by_the_recovery(tmp_path, slow):
    work = tmp_path / "work"
    ledger = DeadLetterLedger(work)
    for n in range(FILES):
        assert ledger.keep_letter({"event_id": f"{n:064x}", "emitted_at": "2026-12-08T00:00:00Z"})
    cfg = load(None, env={}, flags={"work_dir": work})
    timed = _Timed(cfg, FileReads(1, SECONDS))
    with anyio.fail_after(30):  # a bound for a broken test
        letters = await timed.ledger_read("dead-letter ledger's read", ledger.letters)
    assert len(letters) == FILES
