"""The console of a daemon whose work directory stops answering (a hard NFS
mount whose server is away). Its pages show the holds as the planner keeps
them, read from the planner's ledger in the work directory: that read ran
in anyio's thread, untimed, so the console's rebuild waited for ever and
every page with it (each request a thread more, none answered). Now the
read is timed: the page answers with the holds topic's records, marked
unchecked, and says why (an observation's page shows that note). (A real broker, real files, a real thread held
until the test lets it go.)"""

from __future__ import annotations

import os
import threading

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.operations import holds_view
from calstream.daemon.operations.config import load
from calstream.daemon.operations.console import Console
from calstream.topics.catalog import Topics

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
HELD = 20.0  # how long the silent read is held at most: a bound for a broken test


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_the_console_answers_while_the_planners_ledger_is_silent(
        broker, unique_prefix, tmp_path, monkeypatch):
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
    ledger = PlannerLedger(cfg.work_dir)
    ledger.keep("holds", {"exposure_id": "jw01234001001_02101_00001_nrcb1", "state": "held"})
    answers, blocked, returned = threading.Event(), [], []
    real = os.listdir

    def listdir(path=".", *args):
        if os.fspath(path).startswith(os.fspath(ledger.root)) and not answers.is_set():
            blocked.append(path)
            answers.wait(HELD)
            returned.append(path)
        return real(path, *args)

    monkeypatch.setattr(holds_view, "LEDGER_SECONDS", 0.5)
    console = Console(cfg, lambda: [])
    monkeypatch.setattr(os, "listdir", listdir)
    try:
        code, body, _ = await anyio.to_thread.run_sync(console.handle, "/console/")
        assert blocked and not returned  # answered while the read was held
        assert code == 200
        note = console.data.snapshot().status.broker.holds_note  # the same rebuild's
        assert "did not answer" in note and "holds topic's records" in note
    finally:
        answers.set()


def test_holds_list_says_the_planners_ledger_did_not_answer(
        broker, unique_prefix, tmp_path, monkeypatch, capsys):
    """`calstream holds list --work-dir W` of a planner whose ledger is
    silent: its read is timed (the topic's rows then, unchecked), and the
    reason was dropped on the way: it printed "no planner's ledger in W" of
    a work directory that has one (an operator looked for a mistyped
    --work-dir), or, the topic holding none (a broker started again),
    "no exposures held" and nothing else, while the planner held one. Now
    it says the ledger did not answer."""
    from calstream.daemon.operations.cli.main import main

    work = tmp_path / "work"
    cfg = load(None, env={}, flags={"work_dir": work, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    anyio.run(kafka.create_topics, cfg, Topics(cfg.topic_prefix))
    ledger = PlannerLedger(work)
    ledger.keep("holds", {"exposure_id": "jw01234001001_02101_00001_nrcb1", "state": "held"})
    answers, real = threading.Event(), os.listdir

    def listdir(path=".", *args):
        if os.fspath(path).startswith(os.fspath(ledger.root)) and not answers.is_set():
            answers.wait(HELD)
        return real(path, *args)

    monkeypatch.setattr(holds_view, "LEDGER_SECONDS", 0.5)
    monkeypatch.setattr(os, "listdir", listdir)
    try:
        code = main(["holds", "list", "--kafka-bootstrap", broker, "--topic-prefix",
                     unique_prefix, "--work-dir", str(work)])
    finally:
        answers.set()
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() == "no exposures held"
    assert "did not answer" in err and "no planner's ledger" not in err, err
