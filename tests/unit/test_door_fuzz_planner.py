"""The door fuzz (tests/door_fuzz.py) on the planner's doors.

The planner takes product events, pointing updates and plans as it runs
(doers/planner_loop.py ``_decide``), and at start the work orders, holds and
plans the topics keep (doers/planner_restore.py). Each mutant goes in the way
the loop or the restore takes it, amid the recorded stream of
tests/unit/planner_stream.py; the stream's own record follows it. A mutant
the door refuses must leave every decision of the stream as it was without
it; one it takes must be decided without raising, and every message the
planner then makes must be one the publisher's encoding accepts.
"""

from __future__ import annotations

import pytest

from calstream.daemon.deciders.event_checks import EventIds
from calstream.daemon.deciders.planner_state import observe_pointing_everywhere
from calstream.daemon.deciders.product_intake import ProductIntake
from calstream.steps.plans import Plan, PlanError
from calstream.topics import contract

from ..door_fuzz import budget, first_seed, fuzz
from . import planner_stream as stream
from .test_forged_updates_and_plans import _plan_message

KINDS = {"product": "product", "pointing": "pointing_update", "plan": "plan"}


def _recorded() -> list[tuple[str, object, float]]:
    return [(kind, _plan_message(p) if kind == "plan" else p, now)
            for kind, p, now in stream.steps()]


def _raw(message: contract.Message) -> bytes:
    return contract.encode(message)


class Planner:
    """The decisions of one planner, fed the way the loop feeds them."""

    def __init__(self):
        self.state = stream.new_state()
        self.intake = ProductIntake(products_root="/products", input_roots=["/inbox"])
        self.ids = EventIds()
        self.made: list[tuple[str, str]] = []

    def take(self, kind: str, raw: bytes, now: float) -> bool:
        """One record as doers/planner_loop.py _decide takes it; False: a dead letter."""
        try:
            if kind == "plan":  # as the loop and the restore read a plan: PlanError says why not
                emits = self.state.load_plan(
                    Plan.from_json(contract.decode(raw, expected="plan").body), now)
            elif kind == "pointing":
                emits = observe_pointing_everywhere(
                    [self.state], contract.decode(raw, expected="pointing_update"), now)
            else:
                event, problems = self.intake.take(raw, self.ids)
                emits = None if problems else self.state.observe(event, now)
        except (contract.InvalidMessage, PlanError):
            return False
        if emits is None:
            return False
        self._made(emits)
        return True

    def tick(self, now: float) -> None:
        self._made(self.state.tick(now))

    def _made(self, emits) -> None:
        for e in emits:
            contract.encode(e.message)  # the publisher's check: an accepted input makes no refusal
            self.made.append((e.topic, e.message.event_id))

    def play_prefix(self, steps) -> list[tuple[str, str]]:
        """The stream's first steps (no final ticks: it goes on); what they made."""
        for kind, payload, now in steps:
            if kind == "tick":
                self.tick(now)
            elif kind == "product":  # the stream's own (synthetic inputs): decided as they are
                self._made(self.state.observe(payload, now))
            else:
                assert self.take(kind, _raw(payload), now), (kind, payload)
        return self.made

    def play(self, steps) -> None:
        self.play_prefix(steps)
        for later in (10**6, 10**7):
            self.tick(stream.T0 + later)
        self.state.summary(stream.T0 + 10**7)


def _reference() -> list[tuple[str, str]]:
    planner = Planner()
    planner.play(_recorded())
    return planner.made


def test_the_stream_is_decided_alike_each_time():
    assert _reference() == _reference() and len(_reference()) > 10


@pytest.mark.parametrize("kind", ["product", "pointing", "plan"])
def test_a_live_record_mutated_is_refused_or_decided(kind):
    recorded = _recorded()
    # Those the door takes as they are (the stream's stage-2 events name
    # inputs in the inbox, and a redelivery reuses an event id).
    targets = [i for i, (k, payload, now) in enumerate(recorded)
               if k == kind and Planner().take(k, _raw(payload), now)]
    cases = budget(60 if kind == "product" else 40)
    # Every target in turn, each with its own mutants.
    for n, i in enumerate(targets):
        _, message, now = recorded[i]
        reference = Planner()
        reference.play(recorded)
        before = len(Planner().play_prefix(recorded[:i]))
        expected = reference.made[before:]

        def take(raw: bytes, i=i, now=now, expected=expected) -> str:
            planner = Planner()
            planner.play_prefix(recorded[:i])
            taken = planner.take(kind, raw, now)
            planner.made.clear()
            planner.play(recorded[i:])  # the valid record after the mutant, and the rest
            if not taken:
                assert planner.made == expected, "a refused record changed the decisions"
            return "accepted" if taken else "refused"

        counts = fuzz(f"planner {kind} #{n}", message.body, take, seed=first_seed(),
                      cases=max(1, cases // len(targets)))
        assert counts.get("refused"), counts


def _orders_and_holds() -> dict[str, list[contract.Message]]:
    planner = Planner()
    planner.state, made = stream.new_state(), []
    for kind, payload, now in _recorded():
        if kind == "tick":
            made += planner.state.tick(now)
        elif kind == "product":
            made += planner.state.observe(payload, now)
    return {"work_order": [e.message for e in made if e.message.type == "work_order"],
            "hold": [e.message for e in made if e.message.type == "hold"]}


@pytest.mark.parametrize("kind", ["work_order", "hold"])
def test_a_kept_record_mutated_is_refused_or_restored(kind):
    """At start the planner restores what the work topics and the holds
    topic keep (planner_restore.restore): a forged one, taken, must not
    make the stream's own records fail later."""
    examples = _orders_and_holds()[kind][:4]
    assert examples
    for n, message in enumerate(examples):
        def take(raw: bytes) -> str:
            planner = Planner()
            try:
                restored = contract.decode(raw, expected=kind)
            except contract.InvalidMessage:
                return "refused"
            if kind == "hold":
                planner.state.restore_hold(restored)
            else:
                planner.state.restore_order(restored)
            planner.play(_recorded())
            return "accepted"

        counts = fuzz(f"restored {kind} #{n}", message.body, take, seed=first_seed(),
                      cases=max(1, budget(40) // len(examples)))
        assert counts.get("refused"), counts
