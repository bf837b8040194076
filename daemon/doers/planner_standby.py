"""A planner that does not hold the lease: warm, silent, ready to take over.

A standby reads what the active planner reads and decides everything the
same way (doers/planner_loop.py), so its state is current; what it decides is
withheld, not published. It also follows what the active planner publishes
(the work-order topics, the holds, the dead letters): each order and hold is
taught to its state exactly as a restart restores them (so it never orders
again what the active one ordered), and each withheld message the active one
published too is forgotten.

Taking over (the lease granted): the standby first reads those topics to
their end, as they are after the lease moved (the old leader stopped
publishing before it let go, or is dead), then starts publishing, beginning
with what it decided and nobody published: the orders a leader killed
mid-program never sent. Nothing is sent twice (an order seen on the topics is
known) and nothing is lost (an order not seen is withheld here).

Its state and what it withheld are kept together (deciders/standby_withheld.py),
so a standby snapshots and compacts as the active planner does, and starts
again from its own snapshot after a kill -9.

With one planner (``planner_lease = false``) none of this runs: it acts at once.
"""

from __future__ import annotations

import logging
import time

from calstream.daemon.deciders.holds import hold_to_restore
from calstream.daemon.deciders.planner_records import Emit
from calstream.daemon.deciders.standby_withheld import (
    PUBLISHED_CAPACITY,
    WithheldDecisions,
    may_snapshot,
)
from calstream.daemon.doers.planner_leadership import PublishGate
from calstream.topics import contract
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.planner")

# A takeover reads the followed topics until a fetch answered after the grant
# says it is at their end: aiokafka's fetches wait up to 500 ms at the end,
# so after this long every high watermark is from a fetch sent after the grant.
FRESH_FETCH_SECONDS = 1.5


class Standby:
    def __init__(self, gate: PublishGate, topics: Topics, *, follow: bool,
                 capacity: int = PUBLISHED_CAPACITY):
        self.gate = gate
        self.topics = topics
        self.follow = follow  # False: one planner, nothing to follow or withhold
        # Replaced whole by a restore (doers/planner_restore.py): the snapshot's.
        self.memory = WithheldDecisions(capacity)
        self._takeover: tuple[int, float] | None = None  # (generation, granted at)

    @property
    def withheld(self) -> dict[str, Emit]:
        return self.memory.pending

    def may_snapshot(self) -> bool:
        return may_snapshot(self.gate.role())

    def output_names(self, planner) -> list[str]:
        """What the active planner publishes (the topics a standby follows)."""
        if not self.follow:
            return []
        return [self.topics.name(t) for t in (*planner._work_topics(), "holds", "deadletter")]

    # -- while standing by ---------------------------------------------------
    def withhold(self, logical_topic: str, key: str, message: contract.Message) -> None:
        self.memory.withhold(Emit(logical_topic, key, message))

    def observe_output(self, planner, record) -> None:
        """A record the active planner (or anyone) published on a followed topic."""
        # Read: a snapshot's offsets of the followed topics say up to where
        # its ``published`` is complete (a restart reads on from there).
        planner.positions[(record.topic, record.partition)] = record.offset + 1
        if record.value is None:
            return
        logical = self.topics.logical(record.topic)
        try:
            if logical == "holds":
                message = contract.decode(record.value, expected="hold")
                # Not over its own record, and never a release it did not
                # decide itself (holds.hold_to_restore: the broker is shared).
                taken = hold_to_restore(message.body, planner.holds.get(message["exposure_id"]))
                if taken is not None:
                    planner.state.restore_hold(contract.Message("hold", taken))
            elif logical == "deadletter":
                body = contract.parse_json(record.value)
                if not isinstance(body, dict) or not isinstance(body.get("event_id"), str):
                    return
                message = contract.Message("dead_letter", body)
            else:
                message = contract.decode(record.value, expected="work_order")
                planner.state_for(message.get("namespace") or "live").restore_order(message)
        except (contract.InvalidMessage, ValueError):
            return  # the stage consumers (or the operators) deal with these
        self.memory.seen_published(message.event_id)

    # -- taking over ---------------------------------------------------------
    async def take_over_when_due(self, planner, reader) -> None:
        """Called every turn of the planner's loop: act on a new grant once
        the followed topics are read to their end."""
        generation = self.gate.takeover_due()
        if generation is None:
            return
        if not self.follow:
            self.gate.act(generation)
            return
        if self._takeover is None or self._takeover[0] != generation:
            self._takeover = (generation, time.monotonic())
            log.info("planner: taking over: reading the work orders, holds and dead letters "
                     "to their end")
        if time.monotonic() - self._takeover[1] < FRESH_FETCH_SECONDS:
            return
        if not await reader.at_end(set(self.output_names(planner))):
            return
        if not self.gate.act(generation):
            return  # the lease moved again meanwhile
        pending = self.memory.take_all()
        # What this planner decided and nobody published: the leader died
        # first, or this planner itself withheld them while its lease was
        # unconfirmed (PublishGate: a pause, the lease never left it).
        await planner._publish(pending)
        if self.gate.resuming(generation):
            log.warning("planner: publishing resumed (generation %d): the lease is confirmed "
                        "again; %d decision(s) withheld during the pause sent",
                        generation, len(pending))
        else:
            log.warning("planner: now the active planner (generation %d); %d decision(s) "
                        "the previous leader had not published sent", generation, len(pending))

    def describe(self) -> dict:
        return {"withheld": len(self.withheld)}
