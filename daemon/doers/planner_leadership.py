"""Which planner publishes: the one holding the planner lease (a consumer
group on the one-partition ``planner.lease`` topic, doers/kafka/lease.py).

Two or more planners may run (``planner_lease = true``); each reads every
topic and decides everything, but only the lease holder publishes: the
others withhold what they decide (doers/planner_standby.py) and are ready to
take over. With ``planner_lease = false`` (the default, one planner) the
planner holds the lease from the start and no group is joined.

The lease lives on the daemon's event loop and the publishing on the
planner's own (doers/planner_thread.py), so the gate between them is
thread-safe. Fencing: losing the lease closes the gate first (nothing new is
published from that moment) and then waits for the publication in flight to
be acknowledged, all before the member rejoins the group, so before the
coordinator can give the lease to another planner.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from functools import partial

import anyio

from calstream.daemon.doers import kafka, planner_clients
from calstream.daemon.doers.kafka.lease import Lease
from calstream.daemon.doers.kafka.publisher import broker_fault
from calstream.daemon.doers.parking import Parking, until_done
from calstream.daemon.doers.start_waits import StartWaits, broker_cause, started
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.planner")


class PublishGate:
    """The lease as the planner's publishing sees it.

    ``generation`` counts grants: each grant needs its own takeover (reading
    what whoever held the lease meanwhile published) before ``act``.

    ``bound``: how long (monotonic seconds) a grant or a heartbeat the group's
    coordinator answered (``confirm``) vouches for the lease; None with no
    lease group (one planner: it leads for good). A planner frozen past its
    session (SIGSTOP, a VM paused, a loop blocked) was expelled and its lease
    given to another planner, yet nothing has told it so: the revocation comes
    only from its next heartbeat, after it resumed, while its planner thread
    resumed too and sends what it reads at once (every order of that moment
    sent twice). So a lease not confirmed within ``bound`` publishes nothing:
    the gate ends the acting (what is decided meanwhile is withheld, as a
    standby's is), and the planner takes it over again once confirmed -- or
    loses it, as its heartbeat then tells it."""

    def __init__(self, bound: float | None = None, on_pause=None) -> None:
        self._cond = threading.Condition()
        self.held = False
        self.generation = 0
        self._acting: int | None = None
        # The generation whose publishing a missing confirmation paused: its
        # takeover is a resumption (the same lease), not a new leadership.
        self._paused: int | None = None
        self.on_pause = on_pause  # called (under the lock) at each pause: a metric
        self._in_flight = 0
        self.since = time.time()  # of the last change, for the status
        self.bound = bound
        self._confirmed = time.monotonic()
        # Losses of the broker's records (an embedded broker restarted empty,
        # an external one back after a loss) and how many of them the plans
        # and holds were put back for: the daemon's loop notes a loss, the
        # planner that acts next puts back what the topics lack
        # (planner_disk_records.republish_when_owed), whatever its role was
        # at the loss.
        self._losses = 0
        self._losses_repaired = 0

    def grant(self) -> int:
        with self._cond:
            self.held, self.generation, self.since = True, self.generation + 1, time.time()
            self._confirmed, self._paused = time.monotonic(), None
            return self.generation

    def confirm(self, at: float) -> None:
        """The coordinator knew this member at ``at`` (monotonic: when the
        heartbeat it answered was sent, so never later than it saw it)."""
        with self._cond:
            self._confirmed = max(self._confirmed, at)

    def _confirmed_now(self) -> bool:
        """Whether the lease is vouched for now; ends the acting if it is not
        (called holding the lock)."""
        if self.bound is None or time.monotonic() - self._confirmed < self.bound:
            return True
        if self._acting is not None:
            # Taken over again once confirmed: what it withheld is sent then.
            self._paused, self._acting = self._acting, None
            self.since = time.time()
            if self.on_pause is not None:
                self.on_pause()
            log.warning("planner: the planner lease unconfirmed for %.1f s (this process was "
                        "frozen, or the broker is silent): publishing paused, decisions "
                        "withheld until a heartbeat confirms it or the lease is lost",
                        time.monotonic() - self._confirmed)
        return False

    def revoke(self, wait: float) -> bool:
        """Close the gate, then wait (at most ``wait`` s) for publications in
        flight; False if one was still unacknowledged."""
        with self._cond:
            self.held, self._acting, self._paused, self.since = False, None, None, time.time()
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout=wait)

    def takeover_due(self) -> int | None:
        """The generation to take over, while the lease is held and not yet acted on."""
        with self._cond:
            return self.generation if self.held and self._acting != self.generation else None

    def act(self, generation: int) -> bool:
        """Start publishing for ``generation``, unless the lease moved meanwhile."""
        with self._cond:
            if self.held and self.generation == generation and self._confirmed_now():
                self._acting = generation
                return True
            return False

    def resuming(self, generation: int) -> bool:
        """Whether taking ``generation`` over resumes this planner's own paused
        publishing (the lease never left it) rather than a new leadership."""
        with self._cond:
            return self._paused == generation

    @property
    def acting(self) -> bool:
        with self._cond:
            return self.held and self._acting == self.generation and self._confirmed_now()

    def enter(self) -> bool:
        """Begin one publication; False (nothing begun) when not acting."""
        with self._cond:
            if not (self.held and self._acting == self.generation and self._confirmed_now()):
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def records_lost(self) -> None:
        with self._cond:
            self._losses += 1

    def repair_due(self) -> int | None:
        """The count of losses to repair, while acting and one is not
        repaired yet; None otherwise."""
        with self._cond:
            if self._losses == self._losses_repaired or not (
                    self.held and self._acting == self.generation and self._confirmed_now()):
                return None
            return self._losses

    def repaired(self, losses: int) -> None:
        with self._cond:
            self._losses_repaired = max(self._losses_repaired, losses)

    def role(self) -> str:
        with self._cond:
            if self.held:
                if self._acting == self.generation:
                    return "active"
                return "paused" if self._paused == self.generation else "taking over"
            return "standby"


class GatedPublisher(kafka.Publisher):
    """The planner's publisher: sends while the gate is open, else hands the
    message to ``withhold`` (the standby's memory) and answers False."""

    def __init__(self, publisher: kafka.Publisher, gate: PublishGate, withhold, cfg: Config):
        super().__init__(publisher.producer, publisher.topics, publisher.metrics,
                         role=publisher.role, ledger=publisher.ledger)
        self.gate = gate
        self.withhold = withhold
        self.cfg = cfg
        # While the planner restores (planner_clients.restore_sends_waited):
        # the daemon's StartWaits, so that /readyz names the broker it waits for.
        self.restore_waits: StartWaits | None = None

    async def publish(self, logical_topic: str, key: str, message: contract.Message) -> bool:
        """A send the broker does not acknowledge (lost, not answering) is sent
        again until it is, parked (doers/parking.py): raised, it would end the
        planner's task and the daemon with it, the order never sent. Every send
        of the planner's goes through here, dead letters (Publisher.dead_letter)
        included, or through ``publish_all`` (the restore's re-publishing of its
        ledger), which waits the same way.

        The producer is not idempotent: a send that timed out may still have
        reached the broker, and the topic then holds the message twice, with
        one event id (the same body: ``producer`` is set once). Readers take
        it once: the planner a plan by its plan id, a hold by its exposure id
        (the last record wins, and compaction keeps one), a stage its work
        order by its work id (doers/work_item_runner.py: already running or
        done); a dead letter's event id is that of its record (topic,
        partition, offset), as the restore sends again at every start for a
        record it cannot read."""
        return await self._waited(f"sending {message.type} {key[:200]!r}",
                                  partial(self._publish_once, logical_topic, key, message))

    async def _waited(self, what: str, attempt):
        """``attempt()`` until the broker takes it: parked at the first
        failure (it already waited request_timeout_ms), named in /readyz
        while the restore waits for it."""
        if (waits := self.restore_waits) is not None:
            return await waits.step(
                f"{planner_clients.waited_broker(self.cfg, 'producer')}, {what}", attempt,
                broker_fault, stage="planner", max_attempts=1, owner=planner_clients.PLANNER)
        parking = Parking(self.cfg, self.metrics, stage="planner", max_attempts=1,
                          what=f"planner: {what}")
        return await until_done(attempt, parking, cause_of=broker_fault)

    async def send(self, logical_topic: str, key: str,
                   message: contract.Message) -> asyncio.Future | None:
        """The send of ``publish`` without its wait (the planner's work orders,
        doers/planner_publishing.py): the future of the acknowledgement, None
        when withheld. It counts as in flight for the gate until the broker
        answered, so a revoke waits for it as for a publication awaited."""
        if not self.gate.enter():
            self.withhold(logical_topic, key, message)
            return None
        try:
            sent = await self._hand_over(logical_topic, key, message)
        except BaseException:
            self.gate.leave()
            raise
        sent.add_done_callback(lambda _answered: self.gate.leave())
        return sent

    async def publish_all(self, items, placed: list | None = None) -> int:
        """``Publisher.publish_all`` (sent together, one round trip), the set
        sent again until the broker takes it all, parked and named in /readyz
        as ``publish`` is for one record: the restore's re-publishing of its
        ledger, each record of its own key, so a second copy changes nothing."""
        items = list(items)
        return await self._waited(f"sending {len(items)} kept record(s) again",
                                  partial(super().publish_all, items, placed))

    async def _publish_once(self, logical_topic: str, key: str,
                            message: contract.Message) -> bool:
        if not self.gate.enter():
            self.withhold(logical_topic, key, message)
            return False
        try:
            await super().publish(logical_topic, key, message)
        finally:
            self.gate.leave()
        return True


class Leadership:
    """Holds (or competes for) the planner lease on the daemon's loop."""

    def __init__(self, cfg: Config, topics: Topics, metrics: Metrics, gate: PublishGate,
                 waits: StartWaits | None = None):
        self.cfg = cfg
        self.topics = topics
        self.metrics = metrics
        self.gate = gate
        self.waits = waits or StartWaits(cfg, metrics)  # the daemon's: shown in its /readyz
        self.lease: Lease | None = None
        # Labelled by group: only a daemon with the planner role has the series.
        self.leader = metrics.planner_leader.labels(group=f"{cfg.group_prefix}.planner")
        gate.on_pause = metrics.planner_publishing_pauses.inc

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        if not self.cfg.planner_lease:
            self.gate.act(self.gate.grant())  # the only planner: it simply leads
            self.leader.set(1)
            task_status.started()
            await anyio.sleep_forever()
        self.leader.set(0)
        self.lease = Lease(self.cfg, self.topics.name("planner.lease"),
                           f"{self.cfg.group_prefix}.planner", on_granted=self._granted,
                           on_lost=self._lost, on_confirmed=self.gate.confirm)
        log.info("planner: standby until it holds the planner lease (group %s.planner, "
                 "session timeout %d ms)", self.cfg.group_prefix,
                 self.lease.timing.session_timeout_ms)
        # Its member started as a start step: a broker that does not answer
        # (consumer.start's bootstrap times out or is refused) is waited for,
        # parked and named in /readyz, not an error that ends the daemon.
        # Joining the group comes after, from run's polls: aiokafka's
        # coordinator retries a broker it cannot reach there by itself.
        consumer = await self.waits.step(
            f"the broker {self.cfg.kafka_bootstrap} (the planner lease's group "
            f"{self.lease.group})", partial(started, self.lease.consumer), broker_cause)
        if self.lease.watch_heartbeats(consumer):  # before it joins: no grant yet
            self.gate.bound = self.lease.timing.vouched_seconds
        await self.lease.run(consumer, task_status=task_status)

    async def _granted(self) -> None:
        generation = self.gate.grant()
        self.leader.set(1)
        self.metrics.planner_leadership_changes.inc()
        log.warning("planner: leadership gained (generation %d): reading what the previous "
                    "leader published, then publishing", generation)

    async def _lost(self) -> None:
        wait = self.lease.timing.rebalance_timeout_ms / 1000 if self.lease else 5.0
        drained = await anyio.to_thread.run_sync(self.gate.revoke, wait)
        self.leader.set(0)
        self.metrics.planner_leadership_changes.inc()
        log.warning("planner: leadership lost: publishing stopped%s; standing by",
                    "" if drained else " (a publication was still unacknowledged after "
                    f"{wait:.1f}s)")

    def describe(self) -> dict:
        return {"role": self.gate.role(), "lease": bool(self.cfg.planner_lease),
                "generation": self.gate.generation, "since": self.gate.since}
