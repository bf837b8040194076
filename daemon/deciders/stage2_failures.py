"""Which dead letters say that a stage-2 work order failed (pure).

The planner reads the dead-letter topic for one thing: a stage-2 order it
sent that will never make its product, so the stage-3 candidates waiting
for it stop waiting (deciders/level3_state.py). A dead letter is untrusted
like any record, and anyone who may write the topic may forge one: it
counts only if its ``original`` is a record of a stage-2 work topic whose
value, whole (UTF-8), is a stage-2 work order, or, for an order over the
dead letter's budget (64 KiB, cut), or for an order the planner could not
send (its letter's original has no partition or offset:
doers/planner_publishing.refused_order; one the encoding refused is no
order the contract reads back, its value maybe not even JSON), whose
``order`` field (the identity kept whole: topics/dead_letters.order_identity)
names one; the caller then counts it only for an order of that namespace it
knows it sent (the same work id for the same exposure). Either is the letter's word only:
a forger can at worst end the wait for an order the planner really sent (a
degraded close sooner, superseded when the product comes), never invent one.
Anything else is ignored, never dead-lettered again (a dead letter of a
dead letter would come back).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, NamedTuple

from calstream.topics import contract
from calstream.topics.dead_letters import redrive_marks

REASON_SHOWN = 200  # characters of a failure's reason in a degraded order's text


MAX_REDRIVES = 100  # redrive marks an exposure's failures count (a flood of forged ones)

LETTERS_KEPT = 10_000  # refusals known from letters read (RefusedOrders), the most recent


class Stage2Failure(NamedTuple):
    namespace: str
    work_id: str
    exposure_id: str  # the order's product_name: its science exposure
    reason: str
    letter_id: str  # the dead letter's event id (what its redrive marks name)
    redrives: tuple[str, ...] = ()  # the redrive marks on the letter's record (keys)
    # One failure, however many letters of it are read: the order's record
    # (its topic, partition and offset) failed once. A redelivery of that
    # record that failed under another category has another letter (its id
    # counts the category), and counting letters made 2 failures of 1 order,
    # which one redrive could not outweigh. The letter's id where the
    # record's place is not given as whole numbers.
    failed_record: str = ""


def stage2_failure(value: Any, stage2_topics: frozenset[str] | set[str],
                   headers=()) -> Stage2Failure | None:
    """The failed stage-2 order a dead letter's bytes name, or None; with
    the redrives its record's ``headers`` mark (`calstream deadletters
    redrive` puts the letter back with its mark, as a daemon does after a
    broker loss): each puts the order in flight again until its own
    failure, a letter of the redriven record, comes."""
    if not isinstance(value, bytes):
        return None
    try:
        letter = contract.decode(value, expected="dead_letter")
    except contract.InvalidMessage:
        return None
    original = letter.get("original")
    if type(original) is not dict or original.get("topic") not in stage2_topics:
        return None
    order = _whole_order(original) if not original.get("value_truncated") else None
    if order is None and (original.get("value_truncated") or _failed_record(original) is None):
        order = _kept_identity(letter.get("order"))
    if order is None or order.get("stage") != "stage2":
        return None
    reason = letter.get("reason")
    reason = reason if type(reason) is str else ""
    marks = tuple(json.dumps([m.get("at"), m.get("by"), m.get("reason")])
                  for m in redrive_marks(headers) if m["dead_letter"] == letter.event_id)
    return Stage2Failure(order.get("namespace") or "live", order["work_id"],
                         order["product_name"], reason[:REASON_SHOWN], letter.event_id, marks,
                         _failed_record(original) or letter.event_id)


def _failed_record(original: dict) -> str | None:
    """``topic/partition/offset`` of the record a letter is of, or None."""
    partition, offset = original.get("partition"), original.get("offset")
    if type(partition) is not int or type(offset) is not int:
        return None
    return f"record:{original['topic']}/{partition}/{offset}"


def _whole_order(original: dict) -> dict | None:
    raw = original.get("value")
    if original.get("value_encoding") != "utf-8" or type(raw) is not str:
        return None
    try:
        return contract.decode(raw.encode("utf-8"), expected="work_order").body
    except (contract.InvalidMessage, UnicodeEncodeError):
        return None


def _kept_identity(identity: Any) -> dict | None:
    """The identity a dead letter keeps of an order its budget cut
    (topics/dead_letters.order_identity): texts, or nothing."""
    if type(identity) is not dict or not all(
            type(identity.get(k)) is str for k in ("work_id", "stage", "product_name")):
        return None
    namespace = identity.get("namespace")
    return {**identity, "namespace": namespace if type(namespace) is str else None}


class RefusedOrders:
    """The stage-2 orders refused on their way out (doers/planner_publishing
    .refused_order): ``pending``, failures to count now
    (Planner.count_failed_orders); and the refusals known from the planner's
    own letters read back (an original with no place: an order never on its
    topic), by namespace and work id, the ``LETTERS_KEPT`` most recent.

    An order refused is decided again by a rebuild (it never reached its
    topic, so nothing there says it was ordered) and by a standby that takes
    over (it withheld it, and never saw it published); sent again, it is
    refused again. Its letter is on the topic already, with the same event
    id: ``known`` says so, and it is counted by that letter (the same key:
    once) instead of being lettered again. The order itself is still sent:
    a planner whose decider was mended makes one the encoding takes, and
    that one goes; a letter forged for an order only spares a letter. So is
    one the broker refused (one more in calstream_records_refused_total
    each time): a topic whose limit was raised since takes it, and a letter
    cut to its budget cannot be redriven; skipped on a letter's word, a
    forged letter would withhold a real order at every rebuild.
    Kept in the snapshot (``to_body``, session 46): a standby restored from
    one reads only the letters after its offsets.
    """

    def __init__(self, capacity: int = LETTERS_KEPT) -> None:
        self.capacity = capacity
        self.pending: list[Stage2Failure] = []
        self._lettered: OrderedDict[tuple[str, str], Stage2Failure] = OrderedDict()

    def letter_read(self, failure: Stage2Failure) -> None:
        if failure.failed_record != failure.letter_id:  # a placed record: it was on its topic
            return
        self._lettered[(failure.namespace, failure.work_id)] = failure
        self._lettered.move_to_end((failure.namespace, failure.work_id))
        if len(self._lettered) > self.capacity:
            self._lettered.popitem(last=False)

    def known(self, namespace: str, work_id: str, exposure_id: str) -> Stage2Failure | None:
        """The letter read of this order's refusal, if any (the same exposure)."""
        failure = self._lettered.get((namespace, work_id))
        return failure if failure is not None and failure.exposure_id == exposure_id else None

    # A standby restored from a snapshot reads the letters after its offsets
    # only: without these it took over knowing none of the letters before,
    # and lettered each such order once more (until session 46).
    def to_body(self) -> list[list]:
        """The refusals known from letters, oldest first, for the snapshot."""
        return [[f.namespace, f.work_id, f.exposure_id, f.reason, f.letter_id, list(f.redrives)]
                for f in self._lettered.values()]

    @classmethod
    def from_body(cls, body: Any, capacity: int = LETTERS_KEPT) -> RefusedOrders:
        """From a snapshot's list (none in one of before session 46: empty):
        untrusted, each entry kept only if it is what ``to_body`` writes."""
        refused = cls(capacity)
        for entry in body if type(body) is list else ():
            if type(entry) is not list or len(entry) != 6 or not all(
                    type(v) is str for v in entry[:5]) or type(entry[5]) is not list \
                    or not all(type(m) is str for m in entry[5]):
                continue
            *fields, letter_id, redrives = entry
            refused.letter_read(Stage2Failure(*fields, letter_id, tuple(redrives),
                                              failed_record=letter_id))
        return refused
