"""The fast validator (jsonschema-rs) agrees with the reference (python jsonschema).

``contract.validate`` accepts what jsonschema-rs calls valid without asking
the reference; so on every message we can think of -- the examples, the
planner's own outputs, the hostile corpus, and systematic mutations of each
field -- the fast one must never say "valid" where the reference finds a
problem (and, so that the reference is asked only for bad messages, should
say "invalid" only where it does).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from calstream.topics import contract
from tests.integration import hostile_corpus as corpus
from tests.unit.test_contract import EXAMPLES

from .test_planner_outputs import planner_messages

ODD_VALUES = [None, 0, -1, 1.5, 10**20, "", "x" * 5000, "2026-13-45T99:99:99Z",
              "2026-11-24T00:00:00", "2026-11-24T00:00:00+01:00", "\u0663\u0664", [], {},
              [None], {"a": None}, True, "../../etc/passwd", "jw01234001001_02101_00001_nrcb1",
              "jw01234001001_02101_00001_nrcb1\n", "1.4\n",
              "sha256:" + "g" * 64]


def _reference_valid(message_type: str, body) -> bool:
    return not list(contract._validator(message_type).iter_errors(body))


def _mutations(message_type: str, body: dict):
    yield body
    for key in list(body):
        yield {k: v for k, v in body.items() if k != key}
        for value in ODD_VALUES:
            yield {**body, key: value}
        if isinstance(body[key], dict):
            for inner in list(body[key]):
                for value in ODD_VALUES[:8]:
                    changed = copy.deepcopy(body)
                    changed[key][inner] = value
                    yield changed
        if isinstance(body[key], list) and body[key] and isinstance(body[key][0], dict):
            for inner in list(body[key][0]):
                for value in ODD_VALUES[:8]:
                    changed = copy.deepcopy(body)
                    changed[key][0][inner] = value
                    yield changed
    yield {**body, "unknown_field": 1}


def _examples() -> list[tuple[str, dict]]:
    out = [(t, contract.build(t, "a" * 64, **EXAMPLES[t]).body) for t in contract.MESSAGE_TYPES]
    out += [(m.type, m.body) for m in planner_messages()]
    return out


def _corpus(tmp_path: Path) -> list[tuple[str, object]]:
    """The hostile corpus's messages that parse as JSON, with the type their topic carries."""
    bodies = dict(_examples())
    product = bodies["product"]
    orders = [m.body for m in planner_messages() if m.type == "work_order"]
    order2 = next(o for o in orders if o["stage"] == "stage2")
    order3 = next(o for o in orders if o["stage"] == "stage3")
    templates = {"arrival": bodies["arrival"], "product": product, "product2": product,
                 "order2": order2, "order3": order3}
    items = [m for topic, t in (("raw", "arrival"), ("work.stage2", "work_order"),
                                ("products", "product"), ("pointing", "pointing_update"),
                                ("plans", "plan"))
             for m in corpus.byte_level(topic, templates["order2"] if t == "work_order"
                                        else bodies[t])]
    items += corpus.semantic(templates, sentinel=tmp_path, inbox=tmp_path / "inbox",
                             planned_arrival=bodies["arrival"])
    items += corpus.hold_garbage(bodies["hold"])
    out = []
    for item in items:
        try:
            body = json.loads(item.value) if item.value else None
        except (ValueError, RecursionError):
            continue  # not JSON: never reaches a validator
        out.append((corpus.CONSUMED.get(item.topic) or corpus.READ_AT_START[item.topic], body))
    return out


def test_the_fast_validator_agrees_on_every_example_and_every_mutation():
    checked = 0
    for message_type, body in _examples():
        for mutated in _mutations(message_type, body):
            assert contract.is_valid(message_type, mutated) == \
                _reference_valid(message_type, mutated), (message_type, mutated)
            checked += 1
    assert checked > 1000


def test_the_fast_validator_agrees_on_the_hostile_corpus(tmp_path):
    cases = _corpus(tmp_path)
    assert len(cases) > 40
    for message_type, body in cases:
        if len(json.dumps(body)) > 1_100_000:
            continue  # refused for its size before any schema
        assert contract.is_valid(message_type, body) == _reference_valid(message_type, body), \
            (message_type, str(body)[:300])


@pytest.mark.parametrize("message_type", contract.MESSAGE_TYPES)
def test_an_invalid_message_still_gets_the_reference_reason(message_type):
    body = contract.build(message_type, "a" * 64, **EXAMPLES[message_type]).body
    del body["event_id"]
    with pytest.raises(contract.InvalidMessage, match="event_id"):
        contract.validate(message_type, body)
