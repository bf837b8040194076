"""The planner's restore heals from a broker that stops answering mid-way.

After its reader opened, while it reads a topic's tail (read_to_end), the
broker stops answering (SIGSTOP: connections hang, as on a lost host) or is
killed (then started again, empty, its topics and records made again as the
embedded broker's recovery does). The read neither waits for ever unseen
(as on main: /readyz said "catching up", nothing parked), nor ends the
planner (and the daemon), nor ends with part of the tail: it is waited for
(/readyz names the broker and the planner's topic reader;
calstream_parked_items), read again whole once the broker answers, and the
planner then has every record.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.kafka.topic_reader import TopicReader
from calstream.daemon.runtime import Daemon
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import BROKER_TIMEOUT, daemon_config, metric, parked, scrape, until
from .test_holds import send

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(600)]

HELD = [f"jw0{4848 + n:04d}001001_02101_00001_nrcb1" for n in range(40)]


def hold(exposure: str) -> bytes:
    return contract.encode(contract.build(
        "hold", contract.event_id("hold", exposure), exposure_id=exposure, state="held",
        reason="ENGQLPTG=PLANNED", since="2026-11-24T00:00:00Z",
        digest="sha256:" + hashlib.sha256(exposure.encode()).hexdigest()))


def stopped_in_read_of(monkeypatch, logical: str, prefix: str, broker: EmbeddedBroker,
                       how: signal.Signals) -> list[str]:
    """The broker stopped (SIGSTOP) or killed (SIGKILL) as the first
    read_to_end of ``logical`` begins: its reader opened, nothing read yet.
    The list says it happened."""
    paused: list[str] = []
    original = TopicReader.read_to_end
    name = Topics(prefix).name(logical)

    async def pausing(self, **kwargs):
        # The restore's one reader reads its topics a few at a time: the read of ``logical``.
        reading = kwargs.get("topics") or {tp.topic for tp in self.partitions}
        if not paused and name in reading:
            os.kill(broker.process.pid, how)
            paused.append(logical)
        return await original(self, **kwargs)

    monkeypatch.setattr(TopicReader, "read_to_end", pausing)
    return paused


class ReadsHeld:
    """The planner's readers, held from ``hold()`` (once those open end: a
    stalled read ends within its stall time) until ``release()``: the test
    starts the killed broker again and makes its topics and records again
    with no read in between, as a broker that keeps its records (not the
    embedded one) would come back."""

    def __init__(self, monkeypatch) -> None:
        self.held, self.back, self.in_flight = False, False, 0
        original = kafka.open_reader

        @contextlib.asynccontextmanager
        async def open_reader(*args, **kwargs):
            while self.held and not self.back:
                await anyio.sleep(0.1)
            self.in_flight += 1  # until the reader closes: its reads too
            try:
                async with original(*args, **kwargs) as reader:
                    yield reader
            finally:
                self.in_flight -= 1

        monkeypatch.setattr(kafka, "open_reader", open_reader)

    async def hold(self) -> None:
        self.held = True
        with anyio.fail_after(120):  # a bound for a broken daemon, not a measure
            while self.in_flight:
                await anyio.sleep(0.1)

    def release(self) -> None:
        self.back = True


async def send_holds(cfg) -> None:
    await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
    for exposure in HELD:  # only the restore reads holds: a partial read would lose some
        await send(cfg, "holds", exposure, hold(exposure))


@pytest.mark.parametrize("how", [signal.SIGSTOP, signal.SIGKILL], ids=["paused", "killed"])
async def test_the_restore_s_read_waits_out_a_broker_that_stops_answering_and_reads_it_all(
        tmp_path, unique_prefix, monkeypatch, how):
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"],
                            max_attempts=2, retry_backoff=0.1, park_recheck_seconds=1.0,
                            **BROKER_TIMEOUT)
        await send_holds(cfg)
        reads = ReadsHeld(monkeypatch)
        stopped = stopped_in_read_of(monkeypatch, "holds", cfg.topic_prefix, own, how)
        waited = f"waiting for the broker {own.bootstrap} (the planner's topic reader)"
        daemon = Daemon(cfg)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                # Named once the read stalls (broker_timeout_seconds), parked after a second try.
                # (300 s: a bound for a broken daemon, not a measure)
                await until(lambda: parked(daemon, "start")
                            and any(waited in p for p in daemon.readiness()[1]), timeout=300)
                assert stopped == ["holds"]
                problems = daemon.readiness()[1]
                # It waits; it is not reading: "catching up" is not said meanwhile.
                assert not any("catching up" in p for p in problems), problems
                if how == signal.SIGSTOP:
                    os.kill(own.process.pid, signal.SIGCONT)
                else:  # started again empty: its topics and the holds made again
                    await reads.hold()
                    await anyio.to_thread.run_sync(own.restart)
                    await send_holds(cfg)
                    reads.release()
                with anyio.fail_after(180):
                    while not (daemon.start_waits.done and daemon.readiness()[0]):
                        await anyio.sleep(0.2)
                with anyio.fail_after(60):
                    while metric(scrape(daemon.ops.address), "calstream_parked_items") != 0:
                        await anyio.sleep(0.2)
                restored = set(daemon.planner.holds)
                tg.cancel_scope.cancel()
        finally:
            if own.alive():
                os.kill(own.process.pid, signal.SIGCONT)  # stopped, it would not stop
    assert restored == set(HELD)
