"""What an answered heartbeat vouches for (doers/kafka/lease.py), without a broker.

The group coordinator ends a membership two ways: a session with no
heartbeat, and a rebalance the member does not rejoin within the rebalance
timeout (Kafka's join completes without it). A frozen holder can meet the
second: a standby (re)starting while it is frozen begins a rebalance it
cannot answer. The gate's bound must not outlast either.
"""

from __future__ import annotations

from calstream.daemon.doers.kafka.lease import LeaseTiming
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
