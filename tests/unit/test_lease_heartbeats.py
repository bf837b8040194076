"""What an answered heartbeat vouches for (doers/kafka/lease.py), without a broker.

The group coordinator ends a membership two ways: a session with no
heartbeat, and a rebalance the member does not rejoin within the rebalance
timeout (Kafka's join completes without it). A frozen holder can meet the
second: a standby (re)starting while it is frozen begins a rebalance it
cannot answer. The gate's bound must not outlast either, and a heartbeat
answered "rebalancing" vouches for nothing.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from calstream.daemon.doers.kafka.lease import Lease, LeaseTiming
from calstream.daemon.operations.config import load


def _expelled_at_the_latest(t: LeaseTiming) -> float:
    """Seconds after an answered heartbeat's send within which the coordinator
    may give the lease on: a session, or a rebalance begun just after it."""
    return min(t.session_timeout_ms, t.rebalance_timeout_ms) / 1000


def test_a_heartbeat_vouches_for_less_than_a_rebalance_the_holder_cannot_answer():
    for flags in ({"fast_group_timing": True}, {}, {"planner_lease_timeout": 30.0}):
        t = LeaseTiming.of(load(None, env={}, flags=flags))
        assert t.vouched_seconds <= _expelled_at_the_latest(t) - t.heartbeat_interval_ms / 1000, (
            flags, t)
class _Coordinator:
    """aiokafka 0.14's GroupCoordinator as the wrapper sees it: ``_do_heartbeat``
    answers True for NoError and for RebalanceInProgress (it then asks for a
    rejoin: ``request_rejoin`` sets ``_rejoin_needed_fut``)."""

    def __init__(self, answer: str):
        self.answer = answer
        self._rejoin_needed_fut = asyncio.get_running_loop().create_future()

    async def _do_heartbeat(self) -> bool:
        if self.answer == "rebalancing":
            self._rejoin_needed_fut.set_result(None)  # request_rejoin
        return self.answer in ("ok", "rebalancing")


def _confirmations(answer: str) -> list[float]:
    async def beat_once() -> list[float]:
        confirmed: list[float] = []
        cfg = load(None, env={}, flags={"fast_group_timing": True})
        lease = Lease(cfg, "t", "g", on_granted=None, on_lost=None,
                      on_confirmed=confirmed.append)
        consumer = SimpleNamespace(_coordinator=_Coordinator(answer))
        assert lease.watch_heartbeats(consumer)
        await consumer._coordinator._do_heartbeat()
        return confirmed

    return asyncio.run(beat_once())


def test_only_a_heartbeat_the_coordinator_answered_in_a_stable_group_confirms_the_lease():
    assert len(_confirmations("ok")) == 1
    assert _confirmations("failed") == []
    # Answered "rebalancing": the member is kept only until the rebalance
    # timeout counted from the rebalance's start, maybe long before this
    # heartbeat; the lease is revoked before the rejoin anyway.
    assert _confirmations("rebalancing") == []
