"""A lease held through a consumer group: the member assigned partition 0 of a
one-partition topic holds it.

The broker's group coordinator is the arbiter: a member that stops
heartbeating (killed, partitioned, wedged) is expelled after the session
timeout and the partition goes to another member. Nothing is ever written to
the topic and nothing is committed; the group exists for its assignment.

Works on tansu and on Apache Kafka. Timing: Kafka's defaults take ~10 s to
notice a dead member; tests and the embedded default use a 2 s session
(docs/operations.md, notes/kafka-broker.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from calstream.daemon.doers.kafka import clients
from calstream.daemon.operations.config import Config

log = logging.getLogger("calstream.lease")

Callback = Callable[[], Awaitable[None]]
Confirmed = Callable[[float], None]


@dataclass(frozen=True)
class LeaseTiming:
    session_timeout_ms: int
    heartbeat_interval_ms: int
    rebalance_timeout_ms: int

    @classmethod
    def of(cls, cfg: Config) -> LeaseTiming:
        """From ``planner_lease_timeout`` (seconds): heartbeats seven times per
        session (Kafka's ratio is about 3; more is cheap on one member per
        planner), and a rebalance waits half a session for members to rejoin."""
        session = int(cfg.lease_timeout() * 1000)
        return cls(session, max(100, session // 7), max(500, session // 2))

    @property
    def vouched_seconds(self) -> float:
        """How long an answered heartbeat vouches for the lease: the shorter
        of the two waits after which the coordinator gives a silent member's
        partition on -- its session, or the rebalance timeout of a rebalance
        begun just after that heartbeat (a standby starting while the holder
        is frozen: the join completes without the member that did not rejoin)
        -- less one heartbeat's interval for what is sent at the bound's edge
        (the new holder's rebalance and takeover come after the expulsion)."""
        expelled = min(self.session_timeout_ms, self.rebalance_timeout_ms)
        return (expelled - self.heartbeat_interval_ms) / 1000


CLAIM = b"calstream-lease-holder"


class StickyLeaseAssignor(AbstractPartitionAssignor):
    """Partition 0 stays with the member that held it: a member joining (a
    standby starting, a rolling update) does not move the lease; the lease
    moves only when its holder leaves or is expelled. Each member says in its
    join request whether it held the lease; without a claimant the member
    with the smallest id gets it, and of two claimants (after a partition of
    the network) the same."""

    name = "calstream-sticky-lease"
    version = 0

    def __init__(self, lease: Lease):
        self.lease = lease

    def metadata(self, topics) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics),
                                              CLAIM if self.lease.claims else b"")

    def assign(self, cluster, members) -> dict[str, ConsumerProtocolMemberAssignment]:
        claimants = sorted(m for m, meta in members.items() if meta.user_data == CLAIM)
        holder = (claimants or sorted(members))[0]
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        return {m: ConsumerProtocolMemberAssignment(
                    self.version, [(t, [0]) for t in topics] if m == holder else [], b"")
                for m in members}

    def on_assignment(self, assignment) -> None:
        pass


class _Listener(ConsumerRebalanceListener):
    def __init__(self, lease: Lease):
        self.lease = lease

    async def on_partitions_revoked(self, revoked) -> None:
        # Called before the member rejoins: whatever it must stop is stopped
        # before the coordinator can give the partition to anyone else.
        if self.lease.held:
            self.lease.held = False
            await self.lease.on_lost()

    async def on_partitions_assigned(self, assigned) -> None:
        self.lease.claims = any(tp.partition == 0 for tp in assigned)
        if self.lease.claims and not self.lease.held:
            self.lease.held = True
            await self.lease.on_granted()


class Lease:
    def __init__(self, cfg: Config, topic: str, group: str, *, on_granted: Callback,
                 on_lost: Callback, on_confirmed: Confirmed | None = None):
        self.cfg = cfg
        self.topic = topic
        self.group = group
        self.on_granted = on_granted
        self.on_lost = on_lost
        self.on_confirmed = on_confirmed
        self.held = False
        # Whether this member held the lease at the last assignment: claimed at
        # the next join, after the revocation every rebalance begins with.
        self.claims = False
        self.timing = LeaseTiming.of(cfg)

    def consumer(self) -> AIOKafkaConsumer:
        """The group member, not started: the caller starts it (once its broker
        answers: doers/planner_leadership.py) and hands it to ``run``."""
        t = self.timing
        return AIOKafkaConsumer(
            **clients.client_options(self.cfg, held_ms=max(t.rebalance_timeout_ms,
                                                           clients.DEFAULT_FETCH_WAIT_MS)),
            group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="latest", session_timeout_ms=t.session_timeout_ms,
            heartbeat_interval_ms=t.heartbeat_interval_ms,
            rebalance_timeout_ms=t.rebalance_timeout_ms,
            partition_assignment_strategy=(StickyLeaseAssignor(self),),
            # Polled every second in run: a member whose loop stops polling
            # gives the lease up within this much.
            max_poll_interval_ms=max(t.session_timeout_ms, 10000))

    async def run(self, consumer: AIOKafkaConsumer, *,
                  task_status=anyio.TASK_STATUS_IGNORED) -> None:
        """Hold or compete for the lease with ``consumer`` (started), until cancelled."""
        try:
            consumer.subscribe([self.topic], listener=_Listener(self))
            task_status.started()
            while True:
                # Nothing is ever written: polling keeps the membership alive
                # (aiokafka rejoins from here after a rebalance).
                await consumer.getmany(timeout_ms=1000)
        finally:
            with anyio.CancelScope(shield=True):
                if self.held:
                    self.held = False
                    await self.on_lost()
                await consumer.stop()  # leaves the group: the other member takes over now

    def watch_heartbeats(self, consumer: AIOKafkaConsumer) -> bool:
        """Each heartbeat the coordinator answers confirms the membership from
        now on (``on_confirmed``, with when it was sent: PublishGate says
        why), unless it asked for a rejoin (a rebalance). aiokafka has no hook
        for it: its coordinator's ``_do_heartbeat`` (aiokafka 0.14) is
        wrapped on this consumer's instance. False (and a
        warning) where that cannot be done (another aiokafka): the caller
        then trusts the lease as before, until a revocation."""
        coordinator = getattr(consumer, "_coordinator", None)
        beat = getattr(coordinator, "_do_heartbeat", None)
        if beat is None or not hasattr(coordinator, "_rejoin_needed_fut") \
                or self.on_confirmed is None:
            log.warning("planner lease: this aiokafka's heartbeats cannot be watched: a "
                        "planner frozen past its session sends until its next heartbeat")
            return False
        confirmed = self.on_confirmed

        async def watched() -> bool:
            sent = time.monotonic()
            answered = await beat()
            # aiokafka answers True to "rebalancing" too, and asks for a
            # rejoin: the coordinator keeps the member only until the
            # rebalance timeout from the rebalance's start (maybe long before
            # this heartbeat), and the lease is revoked before the rejoin.
            if answered and not coordinator._rejoin_needed_fut.done():
                confirmed(sent)
            return answered

        coordinator._do_heartbeat = watched
        return True
