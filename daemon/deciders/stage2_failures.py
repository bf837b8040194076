"""Which dead letters say that a stage-2 work order failed (pure).

The planner reads the dead-letter topic for one thing: a stage-2 order it
sent that will never make its product, so the stage-3 candidates waiting
for it stop waiting (deciders/level3_state.py). A dead letter is untrusted
like any record, and anyone who may write the topic may forge one: it
counts only if its ``original`` is a record of a stage-2 work topic whose
value, whole (not truncated, UTF-8), is a stage-2 work order; the caller
then counts it only for an order of that namespace it knows it sent (the
same work id for the same exposure). Anything else is ignored, never
dead-lettered again (a dead letter of a dead letter would come back).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from calstream.topics import contract

REASON_SHOWN = 200  # characters of a failure's reason in a degraded order's text


class Stage2Failure(NamedTuple):
    namespace: str
    work_id: str
    exposure_id: str  # the order's product_name: its science exposure
    reason: str


def stage2_failure(value: Any, stage2_topics: frozenset[str] | set[str]) -> Stage2Failure | None:
    """The failed stage-2 order a dead letter's bytes name, or None."""
    if not isinstance(value, bytes):
        return None
    try:
        letter = contract.decode(value, expected="dead_letter")
    except contract.InvalidMessage:
        return None
    original = letter.get("original")
    if type(original) is not dict or original.get("topic") not in stage2_topics:
        return None
    raw = original.get("value")
    if original.get("value_truncated") or original.get("value_encoding") != "utf-8" \
            or type(raw) is not str:
        return None
    try:
        order = contract.decode(raw.encode("utf-8"), expected="work_order")
    except (contract.InvalidMessage, UnicodeEncodeError):
        return None
    if order.get("stage") != "stage2":
        return None
    reason = letter.get("reason")
    reason = reason if type(reason) is str else ""
    return Stage2Failure(order.get("namespace") or "live", order["work_id"],
                         order["product_name"], reason[:REASON_SHOWN])
