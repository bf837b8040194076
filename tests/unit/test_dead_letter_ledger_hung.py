"""The dead-letter ledger and the noted places on a work directory whose
storage stops answering (a hard NFS mount whose server is away): their
writes ran in anyio's threads, untimed, and every dead letter or redrive
held its sender (a stage, the planner) for ever. The ledger is a backup of
the topic: now a write past its time is left behind, the letter is sent all
the same, each copy not kept is counted, and the write left behind still
lands once the mount answers. (A real thread held until the test lets it
go, real files; the producer is a stand-in, as in test_noted_places.py.)"""

from __future__ import annotations

import os
import threading

import anyio
import pytest

from calstream.daemon.doers.kafka.publisher import Publisher
from calstream.daemon.operations.metrics import Metrics
from calstream.topics.catalog import Topics

from .test_dead_letter_ledger import letter_of_a_record, mark, record
from .test_forged_work_records import _Producer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def silent(tmp_path, monkeypatch):
    """The work directory's mount, silent until ``answers`` is set: a file
    put in place under it blocks (in the thread that puts it)."""
    work = tmp_path / "work"
    answers, blocked, returned = threading.Event(), [], []
    real = os.replace

    def replace(src, dst, *args, **kw):
        if os.fspath(dst).startswith(os.fspath(work)) and not answers.is_set():
            blocked.append(dst)
            answers.wait(15)  # a bound for a broken test, not a measure
            returned.append(dst)
        return real(src, dst, *args, **kw)

    monkeypatch.setattr(os, "replace", replace)
    yield work, answers, blocked, returned
    answers.set()


async def reached(blocked: list) -> None:
    """Until the write left behind has reached the silent mount: it is left
    behind after its time wherever its thread was, and on a loaded machine
    it may get to the write only after that (a CI run, session 45)."""
    with anyio.fail_after(10):
        while not blocked:
            await anyio.sleep(0.02)


def unkept(metrics: Metrics, kept: str) -> float:
    return metrics.backups_unkept.labels(kept=kept, cause="work_dir_hung")._value.get()


async def test_dead_letters_are_sent_while_their_ledger_does_not_answer(silent, caplog):
    work, answers, blocked, _ = silent
    metrics, producer = Metrics(), _Producer()
    publisher = Publisher(producer, Topics(), metrics, work_dir=work, backup_seconds=0.2)
    with anyio.fail_after(10):  # on main: held until the mount answers
        for n in (1, 2):
            await publisher.dead_letter(category="bad_file", reason="not FITS", stage="watcher",
                                        key=f"file{n}.fits", path=f"/inbox/file{n}.fits")
    await reached(blocked)
    assert [m["category"] for _, m in producer.sent] == ["bad_file", "bad_file"]
    assert metrics.dead_letters.labels(stage="watcher", category="bad_file")._value.get() == 2
    # The first letter's copy left hung, its place and the second's skipped:
    # one wait, one line.
    assert unkept(metrics, "dead_letter") == 2
    assert unkept(metrics, "deadletter_place") == 2
    [line] = [r for r in caplog.records if "not kept" in r.getMessage()]
    assert line.levelname == "ERROR" and "(work_dir_hung): sent all the same" in line.getMessage()
    answers.set()  # the mount answers: the write left behind lands
    with anyio.fail_after(10):
        while publisher._backups.hung():
            await anyio.sleep(0.02)
    assert [b["event_id"] for b in publisher.ledger.letters()] == [producer.sent[0][1]["event_id"]]
    # And the next letter is kept again.
    await publisher.dead_letter(category="bad_file", reason="not FITS", stage="watcher",
                                key="file3.fits", path="/inbox/file3.fits")
    assert len(publisher.ledger.letters()) == 2
    assert unkept(metrics, "dead_letter") == 2


async def test_a_redrive_is_run_while_its_note_is_not_answered(silent):
    work, answers, blocked, _ = silent
    metrics = Metrics()
    publisher = Publisher(_Producer(), Topics(), metrics, work_dir=work, backup_seconds=0.2)
    mine = letter_of_a_record(1)
    answers.set()
    assert publisher.ledger.keep_letter(mine)
    answers.clear()  # the mount goes silent
    with anyio.fail_after(10):  # on main: held until the mount answers
        await publisher.keep_redrives(record([mark(mine["event_id"])]))
    await reached(blocked)
    assert unkept(metrics, "redrive") == 1


async def test_a_stop_while_a_dead_letter_is_kept_on_a_silent_work_dir_ends(silent):
    work, answers, blocked, returned = silent
    publisher = Publisher(_Producer(), Topics(), Metrics(), work_dir=work)  # a minute's time
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: publisher.dead_letter(
            category="bad_file", reason="not FITS", stage="watcher", key="file1.fits"))
        while not blocked:
            await anyio.sleep(0.02)
        tg.cancel_scope.cancel()  # the daemon's stop
    # Ended with the write still held (on main: only once the mount answered).
    assert blocked and not returned
