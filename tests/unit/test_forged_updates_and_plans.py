"""Forged pointing updates and plans reach no decision they can break.

The planner's two other inputs, mutated the way test_forged_product_events.py
mutates product events, and taken the way the planner loop takes them
(doers/planner_loop.py ``_decide``): the bytes decoded against their schema,
a plan read (``Plan.from_json``), then decided on, amid the recorded stream
of tests/unit/planner_stream.py (holds, releases, a plan, late exposures,
ticks). What the loop turns into a dead letter may be refused; everything
else must be decided without raising, and every message the planner then
emits must be one the publisher's encoding accepts (the loop would dead-
letter a refused one, but no accepted input should make one).
"""

from __future__ import annotations

import json
import random

import pytest

from calstream.daemon.deciders.planner_state import observe_pointing_everywhere
from calstream.steps.plans import Plan, PlanError
from calstream.topics import contract

from . import planner_stream as stream
from .test_forged_product_events import HUGE, WEIRD, _mutated


def _plan_message(plan: Plan) -> contract.Message:
    body = plan.to_json()  # as `calstream plan load` sends it (cli/plans.py)
    return contract.build("plan", contract.event_id("plan", plan.plan_id),
                          plan_id=plan.plan_id, source=plan.source, by="ops",
                          programs=list(plan.programs), exposures=body["exposures"])


def _recorded() -> list[tuple[str, object, float]]:
    """The stream with its plan as the message the plans topic carries."""
    return [(kind, _plan_message(p) if kind == "plan" else p, now)
            for kind, p, now in stream.steps()]


def _taken(kind: str, message: contract.Message) -> object | None:
    """The loop's way in: the value the decision gets, None for a dead letter."""
    raw = json.dumps(message.body).encode()
    try:
        if kind == "pointing":
            return contract.decode(raw, expected="pointing_update")
        decoded = contract.decode(raw, expected="plan")
        return Plan.from_json(decoded.body)
    except (contract.InvalidMessage, PlanError, ValueError, KeyError, TypeError):
        return None  # the loop's RecordProblem / invalid_message: a dead letter


def _play(steps) -> tuple[int, int]:
    """(inputs taken, inputs refused); raises what a decision raises."""
    state = stream.new_state()
    taken = refused = 0
    for kind, payload, now in steps:
        if kind in ("pointing", "plan"):
            value = _taken(kind, payload)
            if value is None:
                refused += 1
                continue
            taken += 1
            emits = (observe_pointing_everywhere([state], value, now) if kind == "pointing"
                     else state.load_plan(value, now))
        elif kind == "product":
            emits = state.observe(payload, now)
        else:
            emits = state.tick(now)
        for e in emits:
            contract.encode(e.message)  # the publisher's check: must not refuse
    for later in (10**6, 10**7):
        for e in state.tick(stream.T0 + later):
            contract.encode(e.message)
    state.summary(stream.T0 + 10**7)
    return taken, refused


def test_the_recorded_stream_is_taken_whole():
    taken, refused = _play(_recorded())
    assert (taken, refused) == (3, 0)  # two pointing updates and a plan


@pytest.mark.parametrize("seed", range(4))
def test_forged_updates_and_plans_are_refused_or_decided(seed):
    rng = random.Random(seed)
    recorded = _recorded()
    targets = [i for i, (kind, _, _) in enumerate(recorded) if kind in ("pointing", "plan")]
    refused = 0
    for _ in range(120):
        i = rng.choice(targets)
        kind, message, now = recorded[i]
        forged = contract.Message(message.type, _mutated(message.body, rng, WEIRD + HUGE))
        taken, dead = _play([*recorded[:i], (kind, forged, now), *recorded[i + 1:]])
        assert taken + dead == 3
        refused += dead
    assert 20 < refused < 110  # both ways were taken: forgeries refused, others decided
