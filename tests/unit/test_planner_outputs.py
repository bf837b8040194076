"""Every message the planner emits follows the contract.

The planner no longer validates its own work orders and associations at
every decision (an order already sent is recognised by its id before it is
built): this test validates every message it emits on a recorded stream
with several programs, holds, releases, a superseded mosaic, a plan and
degraded closes, with the reference validator and jwst's association rules.
"""

from __future__ import annotations

import json

from calstream.steps.associations import validate_level2, validate_level3
from calstream.topics import contract

from .planner_stream import new_state, play, steps


def planner_messages() -> list[contract.Message]:
    return [e.message for e in play(new_state(), steps())]


def test_every_emitted_message_is_valid_and_every_kind_is_covered():
    messages = planner_messages()
    for m in messages:
        contract.decode(json.dumps(m.body).encode(), expected=m.type)  # the reference too
        assert not list(contract._validator(m.type).iter_errors(m.body))
        if m.type == "work_order":
            (validate_level2 if m["stage"] == "stage2" else validate_level3)(m["association"])
    kinds = {(m.type, m.get("stage") or m.get("state") or m.get("category")) for m in messages}
    assert {("work_order", "stage2"), ("work_order", "stage3"), ("hold", "held"),
            ("hold", "released")} <= kinds
    versions = [m["version"] for m in messages if m.type == "work_order" and m["stage"] == "stage3"]
    assert 2 in versions  # the late exposure superseded a mosaic
