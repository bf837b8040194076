"""A wedged embedded broker that outlives SIGKILL: the kernel holds it in
a call (uninterruptible sleep, state D: a mount whose server is away).
``kill_if_wedged`` waited for its exit untimed, in a thread nobody could
abandon: the supervisor stood still (no restart, no "lost" line,
``calstream_broker_up`` 1, /readyz ready) and a stop of the daemon with it,
for as long as the kernel held it. Now the wait is bounded: the broker is
called lost until it exits, and a start step waits for it as for a broker
that does not answer.

A process in state D cannot be made in a test: a real process stands in
for it whose ``kill`` is the signal the kernel does not act on (its real
end comes from the test, after). The port it "holds" is a real socket that
accepts connections and never answers, as a wedged tansu's does."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess

import anyio
import pytest

from calstream.daemon.doers import broker_probe, broker_supervisor
from calstream.daemon.doers.broker_probe import kill_if_wedged
from calstream.daemon.doers.broker_supervisor import BrokerSupervisor
from calstream.daemon.doers.embedded_broker import BrokerError, EmbeddedBroker
from calstream.daemon.operations.metrics import Metrics

pytestmark = pytest.mark.anyio
LIFE = 20  # seconds the stand-in lives if the test never ends it (main: waited for whole)


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Undying(subprocess.Popen):
    """A process SIGKILL does not end (the kernel holds it); its kills counted."""

    kills = 0

    def kill(self) -> None:
        self.kills += 1


@pytest.fixture
def silent_port():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)  # connections accepted by the kernel, never answered
        yield listening.getsockname()[1]


@pytest.fixture
def undying(tmp_path, silent_port, monkeypatch):
    monkeypatch.setattr(broker_probe, "EXIT_SECONDS", 0.2, raising=False)
    broker = EmbeddedBroker(tmp_path / "work", port=silent_port)
    broker.process = Undying(["sleep", str(LIFE)])
    try:
        yield broker
    finally:
        if broker.process.poll() is None:
            os.kill(broker.process.pid, signal.SIGKILL)  # its real end
        broker.process.wait()


async def test_a_killed_broker_that_does_not_exit_is_not_waited_for(undying):
    proc = undying.process
    with pytest.raises(BrokerError) as undead:
        await kill_if_wedged(undying, 0.2)
    assert proc.kills == 1 and proc.poll() is None  # left behind, still running
    assert f"pid {proc.pid}" in str(undead.value) and "SIGKILL" in str(undead.value)


async def test_the_supervisor_calls_it_lost_once_and_keeps_killing_it(undying, monkeypatch,
                                                                       caplog):
    monkeypatch.setattr(broker_supervisor, "EMBEDDED_ANSWER_EVERY", 0.05)
    metrics = Metrics()
    sup = BrokerSupervisor(undying.bootstrap, metrics, loss_bound=600, answer_timeout=0.2,
                           embedded=undying)
    caplog.set_level(logging.INFO, logger="calstream.broker")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sup.run)
        with anyio.fail_after(LIFE - 5):  # a bound for a broken test, not a measure
            while undying.process.kills < 3:
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    said = [r.getMessage() for r in caplog.records if r.name == "calstream.broker"]
    assert sum("did not exit" in line for line in said) == 1, said  # once, not each round
    assert any(line.endswith("retrying with backoff (not ready; not healthy after 600s)")
               for line in said), said
    assert sup.problem() is not None and metrics.broker_up._value.get() == 0
    assert undying.process.poll() is None and sup.restarts == 0  # its port is still taken


async def test_a_start_step_waits_for_it_as_for_a_broker_that_does_not_answer(undying):
    from calstream.daemon.doers.start_waits import (
        StartWaits,
        broker_or_disk_cause,
        restarting_embedded,
    )
    from calstream.daemon.operations.config import load

    cfg = load(None, env={}, flags={"work_dir": undying.work_dir.parent})

    async def nothing() -> None:
        raise AssertionError("nothing is tried on a broker that does not answer")

    again = restarting_embedded(undying, nothing, nothing, answer_timeout=0.2,
                                waits=StartWaits(cfg, Metrics()))
    with pytest.raises(Exception) as waited:  # noqa: PT011 - what it is, judged below
        await again()
    assert broker_or_disk_cause(waited.value) == "broker_unreachable", waited.value
    assert "did not exit" in str(waited.value) and undying.process.poll() is None
