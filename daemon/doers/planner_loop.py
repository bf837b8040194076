"""The planner (a decider): product events in (and its stage-2 orders' dead
letters); work orders, holds and dead letters out.

On start it restores its state (doers/planner_restore.py: a snapshot and the
records after it, or every record), and what outlives a broker that lost them:
the stage-3 products in the product store (the versions already made), the
plans and holds of its ledger (doers/planner_ledger.py), re-published. While it
catches up, "now" is the time of the event being read, so every time-based
decision (a companion wait, a stage-3 quiet period) replays as it was first
made; only once caught up do ticks with the wall clock fire: a companion that
is simply further along the topic must not be declared missing. It never
touches pixels and never imports jwst's pipelines.

Reprocessing namespaces (``calstream replay``) get a state of their own:
their products never complete a live association, nor the reverse. Holds are
shared, as a hold is on an exposure's content wherever it is reprocessed: a
correction or an operator's release reaches every namespace holding that
content.
"""

from __future__ import annotations

import logging
import time

import anyio

from calstream.daemon import stages
from calstream.daemon.deciders.catch_up_orders import OrdersWhileCatchingUp
from calstream.daemon.deciders.event_checks import EventIds
from calstream.daemon.deciders.holds import WaitingUpdates
from calstream.daemon.deciders.planner_records import Emit
from calstream.daemon.deciders.planner_state import PlannerState
from calstream.daemon.deciders.product_intake import ProductIntake, Taken
from calstream.daemon.deciders.stage2_failures import RefusedOrders
from calstream.daemon.doers import (
    kafka,
    planner_clients,
    planner_compaction,
    planner_disk_records,
    planner_restore,
    planner_status,
    planner_tail,
)
from calstream.daemon.doers.parking import Parking
from calstream.daemon.doers.planner_clock import PlannerClock
from calstream.daemon.doers.planner_decisions import RecordDecisions
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.planner_publishing import (
    Faults,
    Refused,
    Unacknowledged,
    keep,
    publish_emits,
    settle,
)
from calstream.daemon.doers.planner_snapshots import snapshot_path
from calstream.daemon.doers.snapshot_files import SnapshotFiles
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.plans import Plan
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import original_record


def original_of(record) -> dict:
    return original_record(topic=record.topic, partition=record.partition, offset=record.offset,
                           key=record.key, value=record.value, timestamp_ms=record.timestamp)


# Records of a fetch whose way in is taken together before their decisions:
# enough for the intake's caches to pay (16 gave most of it), few enough that
# the loop still yields every 50 ms between them.
TAKEN_AHEAD = 128

log = logging.getLogger("calstream.planner")


class Planner(RecordDecisions):
    standby = None  # a Standby (doers/planner_standby.py) when run under the planner lease
    start_waits = None  # the daemon's StartWaits: its clients' starts shown in its /readyz

    def __init__(self, cfg: Config, *, publisher: kafka.Publisher, metrics: Metrics,
                 topics: Topics, clock: PlannerClock | None = None):
        self.cfg = cfg
        self.clock = clock or PlannerClock(metrics)  # its waits' time: deciders/clock_steps.py
        self.publisher = publisher
        self.metrics = metrics
        self.topics = topics
        self.ledger = PlannerLedger(cfg.work_dir)
        self.event_ids = EventIds()
        self.intake = ProductIntake(products_root=str(cfg.products),
                                    input_roots=[str(r) for r in cfg.allowed_roots],
                                    moved_from=[str(r) for r in cfg.products_moved_from])
        self.holds: dict = {}
        # Pointing updates that came before their exposure (deciders/holds.py).
        self.pointing_waiting = WaitingUpdates()
        self.plans: dict[str, Plan] = {}
        self.states: dict[str, PlannerState] = {}
        self.state = self.state_for("live")
        self.caught_up = False
        self._deferred: list = []
        self.held_orders = OrdersWhileCatchingUp()  # deciders/catch_up_orders.py says why
        self.programs_missing: set[str] = set()  # those a gauge was set for
        self.last_view: dict | None = None
        self.behind: dict[str, int] = {}  # records left on each of its topics, once a second
        self.last_progress = time.monotonic()
        # Filled by the restore (doers/planner_restore.py): the plan ids and
        # held exposures the broker's topics have, and which topics were read
        # only after a snapshot's offsets.
        self.on_broker: dict[str, set[str]] = {"plans": set(), "holds": set()}
        self.tail_only: dict[str, bool] = {}
        # (topic, partition) -> next offset to read: what the state covers
        self.positions: dict[tuple[str, int], int] = {}
        self.records_seen = 0
        self.last_snapshot = (time.monotonic(), 0)  # (when, records_seen then), once begun
        self.snapshot_written = 0  # records_seen of the last snapshot on disk (renamed in place)
        self.restored_from: dict | None = None  # the snapshot the state came from, if any
        self.snapshot_reuse = None  # the last snapshot's blocks (deciders/snapshot_reuse.py)
        self.faults = Faults(metrics)  # what it survives outside any record
        self.memory_budget = planner_compaction.memory_budget(self)  # and at the last compaction:
        self.in_use_at_last_compaction, self.memory_checked_at, self.memory_over = 0, 0.0, False
        self._unkept: list[dict] = []  # plans decided, to keep in the ledger
        self.unacked = Unacknowledged()  # work orders sent, not yet acknowledged
        # Stage-2 orders refused on their way out, to count as failed, and
        # those whose letters were read (planner_publishing.refused_order;
        # count_failed_orders).
        self.failed_orders = RefusedOrders()
        self.repair_retry_at = 0.0  # planner_disk_records.republish_when_owed
        self.snapshot_parking = Parking(cfg, metrics, stage="planner", what="planner: snapshot",
                                        root=snapshot_path(cfg.work_dir).parent)
        self.snapshot_files = SnapshotFiles(cfg.work_dir)  # read and written timed

    def state_for(self, namespace: str) -> PlannerState:
        state = self.states.get(namespace)
        if state is None:
            state = self.states[namespace] = PlannerState(
                companion_wait=self.cfg.companion_wait, level3_settle=self.cfg.stage3_settle,
                level3_quiet_period=self.cfg.stage3_quiet_period, namespace=namespace,
                level3_stage2_wait=self.cfg.stage3_stage2_wait,
                holds=self.holds, step_parameters=self.cfg.step_parameters())
            for plan in self.plans.values():
                state.load_plan(plan, self.clock.now())  # nothing to close: no members yet
        return state

    def _work_topics(self) -> list[str]:
        known = {s.logical for s in self.topics.specs}
        return [t for st in stages.work_order_stages() for t in (st.live_topic, st.replay_topic)
                if t in known]

    async def restore(self) -> None:
        """The state back: a snapshot and its tail, or every record (doers/planner_restore.py)."""
        self.metrics.planner_catching_up.set(1)
        await planner_restore.restore(self)

    async def _restore_from_disk(self) -> None:
        """What the broker lost, back from the ledger and the product store
        (doers/planner_disk_records.py)."""
        await planner_disk_records.restore_from_disk(self)

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        await self.restore()
        # One planner sees every partition of products (keyed by program):
        # no group, no commits; the topics are its memory. A standby also
        # follows what the active planner publishes (doers/planner_standby.py).
        # The dead letters for the stage-2 orders among them that failed
        # (deciders/stage2_failures.py): stage 3 stops waiting for those.
        names = [self.topics.name(t) for t in ("products", "pointing", "plans", "deadletter")]
        outputs = set(self.standby.output_names(self)) if self.standby else set()
        # From where the restore stopped (the snapshot and its tail); a
        # standby's outputs not read there from the beginning.
        async with planner_clients.open_reader(
                self, names + sorted(outputs.difference(names))) as reader:
            task_status.started()
            last_tick = last_yield = last_lag = 0.0
            while True:
                acting = self.standby is None or self.standby.gate.acting
                records = await reader.fetch()
                for first in range(0, len(records), TAKEN_AHEAD):
                    await self._on_records(records[first:first + TAKEN_AHEAD], outputs, acting)
                    if time.monotonic() - last_yield > 0.05:  # its beat and clients run too
                        await anyio.sleep(0)
                        last_yield = time.monotonic()
                await self._settle()  # the fetch's orders acknowledged: its positions move
                if time.monotonic() - last_lag >= 1.0:  # catching up too: how far it has to go
                    last_lag = time.monotonic()
                    self.clock.check()  # a step of the wall clock: not the waits' time
                    await planner_status.measure_lag(self, reader, names)
                if not self.caught_up and await reader.caught_up():
                    planner_tail.warn_lost(reader.lost)
                    self.caught_up = True
                    held = self.held_orders.take()  # decided meanwhile, their products not seen
                    log.info("planner caught up with the product events; sending the %d work "
                             "order(s) decided meanwhile", len(held))
                    await self._publish_unrecorded(held, self.unacked)  # settled below
                    for record in self._deferred:
                        await self._on_record(record)
                    self._deferred.clear()
                    await self._settle()
                    self.metrics.planner_catching_up.set(0)
                if self.standby is not None:
                    await self.standby.take_over_when_due(self, reader)
                # The broker lost its records meanwhile: what the topics lack, once acting.
                await planner_disk_records.republish_when_owed(self)
                # A standby's too: its snapshot carries what it withheld.
                await planner_restore.snapshot_when_due(self)  # over budget: Compaction
                if self.caught_up and time.monotonic() - last_tick >= 1.0:
                    last_tick = time.monotonic()
                    # Timed decisions, and the planner's gauges (summed over
                    # daemons), are the active planner's: a standby learns
                    # them from the work topics and shows only /planner.
                    if self.standby is None or self.standby.gate.acting:
                        for state in list(self.states.values()):
                            await self._tick(state)
                        planner_status.refresh(self)
                    else:
                        self.last_view = planner_status.view_or_last(self)

    async def _on_records(self, records: list, outputs: set[str], acting: bool) -> None:
        """A run of records (up to TAKEN_AHEAD): the product events' way in
        together, then their decisions one after another, then what each
        decided sent, in the records' order. The same sends, in the same
        order, as deciding and sending each record before the next, for 8 %
        less of the planner's CPU an event (bench/planner_sends.py): a run
        of decisions keeps the deciders' code and tables in the CPU's
        caches, which a send between two decisions (encoding, the Kafka
        client) pushed out. A broker fault parks inside a send, as before.
        A plan or pointing record is decided once the sends before it are
        done, and sent at once."""
        ahead = self._take_ahead(records)
        products, dead_letters = self.topics.name("products"), self.topics.name("deadletter")
        decided: list[tuple[object, list[Emit] | tuple[str, str]]] = []
        for record, taken in zip(records, ahead, strict=True):
            if record.topic == dead_letters:
                if not acting and record.topic in outputs:
                    self.standby.observe_output(self, record)
                for done, decision in decided:
                    await self._act_on(done, decision)
                decided = []
                await self._on_dead_letter(record)
            elif record.topic in outputs:
                if not acting:  # the active planner knows what it sent
                    self.standby.observe_output(self, record)
            elif record.topic == products:
                decided.append((record, decision := self._decision(record, taken)))
                if not self.caught_up and type(taken) is tuple and type(decision) is list:
                    self.held_orders.product_seen(taken[0].body)  # a product it took as true
            else:
                for done, decision in decided:
                    await self._act_on(done, decision)
                decided = []
                await self._on_record(record)
        for done, decision in decided:
            await self._act_on(done, decision)
        self.held_orders.run_over()

    async def _on_record(self, record, taken: Taken | None = None) -> None:
        """One record of products, pointing or plans, decided and sent.
        Whatever is wrong with it becomes a dead letter; the planner goes on
        with the next record. (Publishing is outside this: a broker fault is
        retried, not blamed on the record.)"""
        if record.topic == self.topics.name("pointing") and not self.caught_up:
            # An update may precede its exposure's product event in the rebuild.
            self._deferred.append(record)
            return
        await self._act_on(record, self._decision(record, taken))

    async def _on_dead_letter(self, record) -> None:
        """A dead letter read: what a failed stage-2 order of this planner's
        decides (``_stage2_failure``), sent; never itself dead-lettered."""
        emits = self._stage2_failure(record)
        if emits and not self.caught_up:
            emits = self.held_orders.hold(emits)
        await self._publish_unrecorded(emits, self.unacked)
        waiting = self.unacked.positions if self.unacked else self.positions
        waiting[(record.topic, record.partition)] = record.offset + 1
        self.records_seen += 1

    async def _settle(self) -> None:
        """Every work order sent unacknowledged is acknowledged (or sent again,
        parked until it is); then the positions behind them move."""
        self.positions.update(await settle(self.unacked, publisher=self.publisher,
                                           metrics=self.metrics, failed=self.failed_orders))
        await self.count_failed_orders()

    async def count_failed_orders(self) -> None:
        """Each stage-2 order refused on its way out (by the encoding or the
        broker) counted as that order's failure now, as its letter read back
        would count it (same key: once): its stage-3 candidates stop
        waiting for it, and what they decide is sent. Not left to the letter
        alone: a letter the dead-letter topic refuses too is never read
        back, and until session 45 an order the encoding refused did not
        read back as an order; either way its candidates waited
        stage3_stage2_wait (6 h). One refused again whose letter was read
        comes here with that letter's key (RefusedOrders.known)."""
        while self.failed_orders.pending:
            failure = self.failed_orders.pending.pop(0)
            try:
                emits = self.count_stage2_failure(failure, self.clock.now())
            except Exception as exc:  # noqa: BLE001 - as a letter read back: never the task's end
                self.faults.survived("refused order", exc)
                continue
            if emits and not self.caught_up:
                emits = self.held_orders.hold(emits)
            await self._publish_unrecorded(emits)

    async def _act_on(self, record, emits: list[Emit] | tuple[str, str]) -> None:
        """What a record's decision said, done: its emits sent, or the record
        dead-lettered. The state covers the record once the broker has
        acknowledged the orders sent before (_settle). A redriven record's
        mark is kept first (Publisher.keep_redrives)."""
        await self.publisher.keep_redrives(record)
        await self._send(record, emits)
        waiting = self.unacked.positions if self.unacked else self.positions
        waiting[(record.topic, record.partition)] = record.offset + 1
        self.records_seen += 1

    async def _send(self, record, emits: list[Emit] | tuple[str, str]) -> None:
        if isinstance(emits, tuple):
            await self._reject(record, *emits)
            return
        while self._unkept:  # out of _decide: a disk fault parks, it is not the record's
            await self.keep("plans", self._unkept.pop(0))
        if not self.caught_up:
            emits = self.held_orders.hold(emits)
        for e in emits:
            if e.topic == "holds" and e.message["state"] == "released":
                path = (e.message.get("release") or {}).get("path") or e.message["waiting_for"]
                self.metrics.hold_releases.labels(path=path).inc()
            elif e.topic == "deadletter":
                # The deciders judge values; the record they came from (its
                # topic, partition and offset) is known here, and an operator
                # needs it to find or redrive it.
                e.message.body["original"] = original_of(record)
        refused = await self._publish(emits, self.unacked)
        if refused:  # its orders are checked when encoded, not before; the others went
            await self._reject(record, "invalid_message", "; ".join(r.reason for r in refused))
            return
        self.last_progress = time.monotonic()

    async def _tick(self, state: PlannerState) -> None:
        """Time passes for one namespace. Neither a decision that raises nor
        an order the encoding refuses may end the planner's task (the daemon
        would restart into the same tick): the fault is logged and counted,
        a refused order dead-lettered, and the next tick comes."""
        try:
            emits = state.tick(self.clock.now())
        except Exception as exc:  # noqa: BLE001 - see the docstring
            self.faults.survived("tick", exc)
            return
        await self._publish_unrecorded(emits)

    async def _publish_unrecorded(self, emits: list[Emit], unacked=None) -> None:
        """Emits of no record (a tick's, those held): one the encoding refuses
        is a dead letter of its own."""
        for r in await self._publish(emits, unacked):
            eid = r.emit.message.get("exposure_id")  # the refused message's: any type
            await self.publisher.dead_letter(
                category="invalid_message", stage="planner", key=r.emit.key, reason=r.reason,
                exposure_id=eid if isinstance(eid, str) else None,
                about=str(r.emit.message.get("event_id")))

    async def _reject(self, record, category: str, reason: str) -> None:
        key = record.key.decode("utf-8", "replace") if record.key else ""
        await self.publisher.dead_letter(category=category, stage="planner", key=key,
                                         record=record, reason=reason)

    async def _publish(self, emits: list[Emit],
                       unacked: Unacknowledged | None = None) -> list[Refused]:
        refused = await publish_emits(emits, publisher=self.publisher, topics=self.topics,
                                      ledger=self.ledger, metrics=self.metrics, cfg=self.cfg,
                                      unacked=unacked, failed=self.failed_orders)
        await self.count_failed_orders()  # those refused before their answer (settle: after)
        return refused

    async def keep(self, topic: str, body: dict) -> None:
        await keep(self.ledger, topic, body, cfg=self.cfg, metrics=self.metrics)
