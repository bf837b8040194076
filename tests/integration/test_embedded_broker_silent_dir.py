"""The embedded broker started again while its directory (in the work
directory) does not answer: a hard NFS mount whose server is away. The
supervisor made the directory and opened tansu.log on the event loop's
thread, where a silent mount froze the whole daemon (every role, the
liveness beat) for as long as it stayed silent. Now that part is timed in a
thread: the restart is retried (one error line each time) while the loop
goes on, and the broker runs again once the directory answers. A real
tansu, a real thread held until the test lets it go."""

from __future__ import annotations

import logging
import os
import threading

import anyio
import pytest

from calstream.daemon.doers.broker_supervisor import BrokerSupervisor
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.operations.metrics import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_a_restart_on_a_silent_work_dir_leaves_the_daemon_running(tmp_path, monkeypatch,
                                                                        caplog):
    own = EmbeddedBroker(tmp_path / "work")
    own.start()
    sup = BrokerSupervisor(own.bootstrap, Metrics(), loss_bound=60, answer_timeout=5.0,
                           embedded=own, read_seconds=0.2)
    answers, asked = threading.Event(), threading.Event()
    real = os.mkdir

    def mkdir(path, *args, **kw):
        if os.fspath(path) == os.fspath(own.work_dir) and not answers.is_set():
            asked.set()
            answers.wait(30)  # a bound for a broken test, not a measure
        return real(path, *args, **kw)

    caplog.set_level(logging.ERROR, logger="calstream.broker")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            monkeypatch.setattr(os, "mkdir", mkdir)
            own.process.kill()
            with anyio.fail_after(20):
                while not asked.is_set() or "did not start again" not in caplog.text:
                    await anyio.sleep(0.02)  # the loop runs while the directory is silent
            assert not own.alive() and not answers.is_set()
            answers.set()  # the directory answers
            with anyio.fail_after(30):
                while not own.alive():
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    finally:
        answers.set()
        own.stop()


async def test_the_start_of_the_embedded_broker_on_a_silent_work_dir_parks(tmp_path, monkeypatch):
    """The start made the broker's directory, its probe file and tansu.log on
    the event loop's thread: a silent mount froze the whole daemon at its
    start (the operations endpoint's /readyz still said "trying ..."). Now
    parked work_dir_hung, and the broker starts once the directory answers."""
    from calstream.daemon.doers.start_waits import StartWaits, hung_or_disk_cause, start_embedded
    from calstream.daemon.operations.config import load

    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "max_attempts": 2,
                                    "retry_backoff": 0.01, "park_recheck_seconds": 0.05})
    waits = StartWaits(cfg, Metrics(), read_seconds=0.2)
    own = EmbeddedBroker(cfg.work_dir)
    answers = threading.Event()
    real = os.mkdir

    def mkdir(path, *args, **kw):
        if os.fspath(path).startswith(os.fspath(cfg.work_dir)) and not answers.is_set():
            answers.wait(30)  # a bound for a broken test, not a measure
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    parked = waits.metrics.parked.labels(stage="start", cause="work_dir_hung", root="")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(waits.step, "the embedded broker",
                          lambda: start_embedded(own, waits), hung_or_disk_cause)
            with anyio.fail_after(20):
                while parked._value.get() < 1:
                    await anyio.sleep(0.02)
            assert not own.alive()
            answers.set()
        assert own.alive() and parked._value.get() == 0
    finally:
        answers.set()
        own.stop()


def test_tansu_is_launched_from_outside_the_work_dir(tmp_path, monkeypatch):
    """tansu was launched with its working directory in the work directory,
    on the event loop's thread: Popen returns only once the child has
    executed tansu, after changing to that directory, so a mount gone
    silent between the timed making of the directory and the launch held
    the whole daemon there for ever. (A change of directory that does not
    return cannot be made here: what is checked is where tansu is launched
    from; a real tansu.)"""
    import subprocess
    from pathlib import Path

    work, launched, real = tmp_path / "work", [], subprocess.Popen

    def popen(*args, **kw):
        launched.append(kw.get("cwd"))
        return real(*args, **kw)

    monkeypatch.setattr(subprocess, "Popen", popen)
    own = EmbeddedBroker(work)
    try:
        own.start()
        assert own.alive()
    finally:
        own.stop()
    assert launched and all(cwd is not None and not Path(cwd).resolve().is_relative_to(
        work.resolve()) for cwd in launched)


def test_a_start_that_fails_reads_nothing_of_a_silent_work_dir(tmp_path, monkeypatch, caplog):
    """tansu exits during its start (here: a storage it does not know). Its
    output went to <work_dir>/broker/tansu.log, and the error's last lines
    were read from there on the event loop's thread, untimed: a work
    directory gone silent held the whole daemon in that read (and tansu
    itself could hang writing its log there). Now its output comes through
    a pipe into the daemon's log: the error names its last lines and
    nothing of the work directory is read. (A real tansu; a read of the
    work directory held until the test lets it go.)"""
    import builtins
    import io

    from calstream.daemon.doers.embedded_broker import BrokerError, free_port

    work = tmp_path / "work"
    own = EmbeddedBroker(work, storage="nosuch://x", port=free_port())
    answers, held, real = threading.Event(), [], io.open

    def opened(file, mode="r", *args, **kw):
        if isinstance(file, (str, os.PathLike)) and "r" in mode and os.fspath(file).startswith(
                os.fspath(work)) and not answers.is_set():
            held.append(file)
            answers.wait(10)  # a bound for a broken test, not a measure
        return real(file, mode, *args, **kw)

    monkeypatch.setattr(io, "open", opened)
    monkeypatch.setattr(builtins, "open", opened)
    caplog.set_level(logging.INFO, logger="calstream.broker")
    try:
        with pytest.raises(BrokerError) as failed:
            own.start()
    finally:
        answers.set()
        own.stop()
    assert not held, held  # nothing of the work directory read by the start
    assert "UnsupportedStorageUrl" in str(failed.value), failed.value
    assert any(r.levelno == logging.ERROR and r.getMessage().startswith("tansu: ")
               and "UnsupportedStorageUrl" in r.getMessage() for r in caplog.records)
    assert list((work / "broker").iterdir()) == []  # tansu writes nothing there


async def test_the_start_of_the_embedded_broker_writes_nothing_in_its_directory(tmp_path):
    """The start wrote a probe file in <work_dir>/broker (and removed it), to
    wait for a full disk there: tansu panicked writing its log in it until
    session 45. It writes nothing there since (its output is the daemon's
    log), so the probe only made a start wait for a full disk that harms
    nothing, and only when the start (not the supervisor) started it. The
    directory's mtime, set far in the past, says whether anything was made
    or removed in it. (A real tansu.)"""
    from calstream.daemon.doers.start_waits import StartWaits, start_embedded
    from calstream.daemon.operations.config import load

    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work"})
    own = EmbeddedBroker(cfg.work_dir)
    own.make_work_dir()
    os.utime(own.work_dir, ns=(1_000_000_000, 1_000_000_000))
    try:
        await start_embedded(own, StartWaits(cfg, Metrics()))
        assert own.alive()
    finally:
        own.stop()
    assert own.work_dir.stat().st_mtime_ns == 1_000_000_000  # nothing made or removed there
    assert list(own.work_dir.iterdir()) == []
