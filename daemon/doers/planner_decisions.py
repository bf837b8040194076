"""What a record makes the planner decide (the planner loop's half that sends nothing).

A products, pointing or plans record is read (the product events' way in,
``ProductIntake``, taken for a run of records at once), handed to the
deciders of its namespace, and comes back as the emits to send -- or as the
(category, reason) of the dead letter it becomes: whatever is wrong with a
record is the record's, never the planner's end. Kept apart from
``planner_loop``, which sends what is decided, settles positions and keeps
time (its clock); ``RecordDecisions`` is a mixin of its ``Planner``, whose state
(``states``, ``intake``, ``plans``, ``caught_up``, ...) it reads.
"""

from __future__ import annotations

import logging

from calstream.daemon import stages
from calstream.daemon.deciders.planner_records import Emit
from calstream.daemon.deciders.planner_state import (
    observe_pointing_everywhere,
    pointing_on_arrival,
)
from calstream.daemon.deciders.product_intake import Taken
from calstream.daemon.deciders.snapshot_blocks import SnapshotInvalid
from calstream.daemon.deciders.stage2_failures import Stage2Failure, stage2_failure
from calstream.steps.failures import error_text
from calstream.steps.plans import Plan, PlanError
from calstream.topics import contract

log = logging.getLogger("calstream.planner")


class RecordProblem(ValueError):
    """A record the planner cannot take; ``category`` names the dead letter's."""

    def __init__(self, category: str, reason: str):
        super().__init__(reason)
        self.category = category


class RecordDecisions:
    def _now(self, record) -> float:
        # While rebuilding, time is the event's own: decisions replay as made.
        if self.caught_up or record.timestamp is None or record.timestamp <= 0:
            return self.clock.now()
        return min(self.clock.now(), record.timestamp / 1000.0)

    def _take_ahead(self, records: list) -> list[Taken | None]:
        """The product events' way in, for a run of records at once, before
        any is decided (``ProductIntake.take_each``: the same results, for
        less); None for the records of other topics."""
        products = self.topics.name("products")
        mine = [r.value for r in records if r.topic == products]
        taken = iter(self.intake.take_each(mine, self.event_ids))
        return [next(taken) if r.topic == products else None for r in records]

    def _decision(self, record, taken: Taken | None) -> list[Emit] | tuple[str, str]:
        """What ``record`` makes the planner send, or (category, reason) of
        the dead letter it becomes."""
        try:
            return self._decide(record, taken)
        except contract.InvalidMessage as exc:
            return "invalid_message", str(exc)
        except RecordProblem as exc:
            return exc.category, str(exc)
        except SnapshotInvalid:  # its restored state cannot be read: a new planner rebuilds
            raise
        except Exception as exc:  # noqa: BLE001 - no record may end the planner
            # One record's fault, with its dead letter: flood-controlled as
            # the admission's "cannot admit this record" is (operations/logs.py).
            log.exception("planner: cannot handle %s[%d]@%d", record.topic, record.partition,
                          record.offset, extra={"fault": "data"})
            return "bad_input", (f"the planner cannot handle this record: "
                                 f"{error_text(exc)}")

    def _decide(self, record, taken: Taken | None) -> list[Emit]:
        if record.topic == self.topics.name("plans"):
            return self._plan_emits(record)
        if record.topic == self.topics.name("pointing"):
            try:
                update = contract.decode(record.value, expected="pointing_update")
            except contract.InvalidMessage as exc:
                raise RecordProblem("rejected_update", f"pointing update rejected: {exc}") \
                    from None
            # Live first: it judges the update; a namespace holding the same
            # content takes the release with it.
            return observe_pointing_everywhere(self._live_first(), update, self.clock.now(),
                                               self.pointing_waiting)
        if taken is None:  # a record not taken ahead (a deferred one, a test's)
            taken = self.intake.take_each([record.value], self.event_ids)[0]
        if isinstance(taken, Exception):
            raise taken
        event, problems = taken
        if problems:
            raise RecordProblem("bad_input", "impossible product event: " + "; ".join(problems))
        state = self.state_for(event.get("namespace") or "live")
        # The orders are built unchecked: tests/unit/test_planner_outputs.py
        # validates what the deciders make (schemas and jwst's association
        # rules), and the publisher's encoding checks every message's schema.
        emits = state.observe(event, self._now(record))
        if self.pointing_waiting and event.body["stage"] == "detector1":
            # Updates that came first, applied as a rebuild applies them.
            emits += pointing_on_arrival(self._live_first(), event.body["exposure_id"],
                                         self._now(record), self.pointing_waiting)
        return emits

    def _live_first(self) -> list:
        return [self.state, *(s for s in self.states.values() if s is not self.state)]

    def _stage2_failure(self, record) -> list[Emit]:
        """A dead letter: if it is one of a stage-2 order this planner sent,
        what its stage-3 candidates decide now. Never a dead letter itself:
        anything it cannot take, or that raises, is ignored (and counted)."""
        try:
            topics = {self.topics.name(t) for st in stages.work_order_stages()
                      if st.name == "stage2" for t in (st.live_topic, st.replay_topic)}
            failure = stage2_failure(record.value, topics, record.headers)
            if failure is None:
                return []
            # Known before its order may be decided again (a rebuild, a takeover):
            # refused again, it is not lettered again (RefusedOrders).
            self.failed_orders.letter_read(failure)
            return self.count_stage2_failure(failure, self._now(record))
        except Exception as exc:  # noqa: BLE001 - a dead letter of a dead letter would come back
            self.faults.survived("dead letter", exc)
            return []

    def count_stage2_failure(self, failure: Stage2Failure, now: float) -> list[Emit]:
        """A stage-2 order's failure, read from its letter or known as its
        order was refused (Planner.count_failed_orders): counted in its
        namespace's state (only for an order that state sent), once per
        ``failed_record``; what its stage-3 candidates decide now."""
        state = self.states.get(failure.namespace)
        if state is None:
            return []
        return state.observe_stage2_failure(
            failure.work_id, failure.exposure_id, failure.reason, now,
            failure_key=failure.failed_record, redrives=failure.redrives)

    def _plan_emits(self, record) -> list[Emit]:
        message = contract.decode(record.value, expected="plan")
        if message["plan_id"] in self.plans:
            return []
        try:
            plan = Plan.from_json(message.body)
        except PlanError as exc:  # it says which plan, and why
            raise RecordProblem("bad_input", str(exc)) from None
        # Decided first: a plan a decision cannot take is dead-lettered, not
        # kept in the ledger to be loaded (and refused) again at every start.
        emits = [e for state in list(self.states.values())
                 for e in state.load_plan(plan, self._now(record))]
        self.plans[plan.plan_id] = plan
        self._unkept.append(message.body)  # kept in _send (outlives a broker losing the topic)
        self.metrics.plans_loaded.inc()
        log.info("plan %s loaded (%s: %d exposure(s) of program(s) %s)", plan.plan_id[:12],
                 plan.source, len(plan.exposures), ", ".join(plan.programs))
        return emits
