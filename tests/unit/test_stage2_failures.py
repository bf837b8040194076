"""A stage-2 order dead-lettered: its stage-3 candidates stop waiting for it
(pure logic, no broker). Only a dead letter whose original record is a
stage-2 work order the planner sent (same work id, same exposure, same
namespace) counts; anything else is ignored."""

from __future__ import annotations

import json

from calstream.daemon.deciders.stage2_failures import stage2_failure
from calstream.topics import contract
from calstream.topics.dead_letters import REDRIVE_HEADER, order_identity, original_record

from .test_level3_stage2_wait import (
    QUIET,
    SETTLE,
    T0,
    WAIT,
    cal,
    dither,
    feed,
    new_state,
    rate,
    stage3,
)

STAGE2 = frozenset({"calstream.work.stage2", "calstream.work.stage2.replay"})
FOURTH = "jw01234001001_02101_00004_nrcb1"


def _letter(order: contract.Message, *, topic: str = "calstream.work.stage2",
            reason: str = "calwebb_spec2 failed: boom", budget: int = 64 * 1024,
            offset: int = 7, category: str = "permanent_failure") -> bytes:
    original = original_record(topic=topic, partition=0, offset=offset, key=order["product_name"].encode(),
                               value=contract.encode(order), timestamp_ms=1, budget=budget)
    return contract.encode(contract.build(
        "dead_letter", contract.event_id("dead_letter", order.event_id, offset, category),
        category=category,
        reason=reason, stage="stage2", attempts=3, exposure_id=order["product_name"],
        original=original))


def _ordered_fourth(state) -> tuple[contract.Message, float]:
    for n in (1, 2, 3):
        feed(state, dither(n), T0 + n)
    [order] = [e.message for e in state.observe(rate(dither(4), T0 + 4), T0 + 4)]
    return order, T0 + 4


def _fail(state, letter: bytes, now: float, headers=()):
    failure = stage2_failure(letter, STAGE2, headers)
    if failure is None:
        return None
    return stage3(state.observe_stage2_failure(failure.work_id, failure.exposure_id,
                                               failure.reason, now, failure_key=failure.failed_record,
                                               redrives=failure.redrives))


def _redrive_mark(letter: bytes, at: str = "2026-12-07T03:00:00Z") -> list:
    """The header `calstream deadletters redrive` puts on the letter it sends back."""
    event_id = json.loads(letter)["event_id"]
    return [(REDRIVE_HEADER, json.dumps({"by": "night", "reason": "fixed", "at": at,
                                         "dead_letter": event_id}).encode())]


def test_a_failed_member_stops_the_wait_after_the_usual_quiet_period():
    state = new_state()
    order, changed = _ordered_fourth(state)
    assert _fail(state, _letter(order), changed + 10) == []  # the quiet period is not over
    [v1] = stage3(state.tick(changed + QUIET))  # not WAIT
    assert f"stage 2 failed: {FOURTH} (calwebb_spec2 failed: boom)" in v1["degraded"]
    assert len(v1["inputs"]) == 3
    # After the quiet period already: closed at once when the dead letter comes.
    again = new_state()
    order, changed = _ordered_fourth(again)
    [v1] = _fail(again, _letter(order), changed + QUIET + 5)
    assert "stage 2 failed" in v1["degraded"]
    # The same dead letter again (a re-read): nothing more.
    assert _fail(again, _letter(order), changed + QUIET + 6) == []


def test_a_redriven_order_s_late_product_supersedes():
    state = new_state()
    order, changed = _ordered_fourth(state)
    _fail(state, _letter(order), changed + 10)
    [v1] = stage3(state.tick(changed + QUIET))
    state.observe(cal(dither(4), changed + WAIT), changed + WAIT)
    [v2] = stage3(state.tick(changed + WAIT + SETTLE))
    assert v2["version"] == 2 and v2["degraded"] is None and len(v2["inputs"]) == 4


def test_a_newer_order_of_the_exposure_is_in_flight_again():
    state = new_state()
    order, changed = _ordered_fourth(state)
    _fail(state, _letter(order), changed + 10)
    state.stage3.stage2_ordered(FOURTH)  # e.g. its new content ordered again
    assert stage3(state.tick(changed + QUIET)) == []  # waits up to WAIT again
    [v1] = stage3(state.tick(changed + WAIT))
    assert "stage3_stage2_wait" in v1["degraded"]


def test_dead_letters_that_are_not_of_an_order_it_sent_are_ignored():
    state = new_state()
    order, changed = _ordered_fourth(state)
    body = dict(order.body)
    forged = [
        _letter(contract.Message("work_order", {**body, "work_id": "f" * 64})),  # not sent
        _letter(contract.Message("work_order", {**body, "product_name": "jw01234001001_02101_00003_nrcb1"})),
        _letter(contract.Message("work_order", {**body, "namespace": "elsewhere"})),
        _letter(order, topic="calstream.work.stage3"),  # not a stage-2 topic
        _letter(order, budget=100),  # truncated: not read
        b"{not json", json.dumps({"schema": "calstream.dead_letter"}).encode(), b"",
    ]
    for letter in forged:
        failure = stage2_failure(letter, STAGE2)
        if failure is not None and failure.namespace == "live":
            assert state.observe_stage2_failure(failure.work_id, failure.exposure_id,
                                                failure.reason, changed + QUIET + 5) == []
    assert stage2_failure(_letter(order, topic="calstream.work.stage3"), STAGE2) is None
    assert stage2_failure(_letter(order, budget=100), STAGE2) is None
    assert stage2_failure(_letter(order), STAGE2).work_id == order["work_id"]
    assert stage3(state.tick(changed + QUIET)) == []  # still in flight
    assert state.summary(changed + QUIET)["level3"]["open"] == 1


def test_a_rebuild_reading_the_dead_letter_decides_the_same():
    def play(state, letter=None):
        out = []
        for n in (1, 2, 3):
            out += state.observe(rate(dither(n), T0 + n), T0 + n)
            out += state.observe(cal(dither(n), T0 + n + 1), T0 + n + 1)
        out += state.observe(rate(dither(4), T0 + 4), T0 + 4)
        letter = letter or _letter(next(e.message for e in out if e.key == FOURTH))
        failure = stage2_failure(letter, STAGE2)
        out += state.observe_stage2_failure(failure.work_id, failure.exposure_id,
                                            failure.reason, T0 + 14)
        return out + state.tick(T0 + 4 + QUIET), letter

    first = new_state()
    emitted, letter = play(first)
    sent = [e.message for e in emitted]
    assert [o["stage"] for o in sent].count("stage3") == 1
    # Every order first (the work topics), then the records, the dead letter among them.
    again = new_state()
    for o in sent:
        again.restore_order(o)
    assert play(again, letter)[0] == []
    assert again.summary(T0 + 4 + QUIET) == first.summary(T0 + 4 + QUIET)


def _truncated(order: contract.Message, **identity) -> bytes:
    """A dead letter of an order over the 64 KiB budget (here 100 bytes), as
    a stage-2 consumer sends it: the order's identity kept whole beside it."""
    letter = contract.decode(_letter(order, budget=100), expected="dead_letter")
    body = dict(letter.body, order={**order_identity(order.body), **identity})
    return contract.encode(contract.Message("dead_letter", body))


def test_a_truncated_order_s_dead_letter_counts_by_the_identity_it_keeps():
    # An order over 64 KiB was truncated in its dead letter and ignored: the
    # member waited the whole stage3_stage2_wait (6 h) for a run that had failed.
    state = new_state()
    order, changed = _ordered_fourth(state)
    [v1] = _fail(state, _truncated(order), changed + QUIET + 5)
    assert f"stage 2 failed: {FOURTH}" in v1["degraded"]


def test_a_truncated_letter_naming_an_order_not_sent_is_ignored():
    # Its identity is the letter's word only: it counts for an order this
    # planner sent for that exposure, which a forger can at worst end early.
    state = new_state()
    order, changed = _ordered_fourth(state)
    for identity in ({"work_id": "f" * 64}, {"product_name": "jw01234001001_02101_00003_nrcb1"},
                     {"namespace": "elsewhere"}, {"stage": "stage3"}):
        failure = stage2_failure(_truncated(order, **identity), STAGE2)
        if failure is not None and failure.namespace == "live":
            assert state.observe_stage2_failure(failure.work_id, failure.exposure_id,
                                                failure.reason, changed + QUIET + 5) == []
    assert stage2_failure(_truncated(order, stage="stage3"), STAGE2) is None
    body = json.loads(_truncated(order))
    body["order"]["work_id"] = 7  # not the schema's: no letter
    assert stage2_failure(json.dumps(body).encode(), STAGE2) is None
    assert stage3(state.tick(changed + QUIET)) == []  # still in flight


def test_a_redriven_order_is_in_flight_again_until_it_fails_again():
    # A redrive re-sends the order; the member's failure stayed counted, and
    # its candidate closed degraded on the quiet period while the redriven
    # order ran. The redrive puts the letter back with its mark: the planner
    # counts the order in flight again, and its new failure (a letter of the
    # redriven record, its own place) ends the wait again.
    state = new_state()
    order, changed = _ordered_fourth(state)
    first = _letter(order)
    _fail(state, first, changed + 10)
    assert _fail(state, first, changed + 20, _redrive_mark(first)) == []
    assert _fail(state, first, changed + 21, _redrive_mark(first)) == []  # the same mark again
    assert stage3(state.tick(changed + QUIET)) == []  # in flight: waits up to WAIT
    [v1] = _fail(state, _letter(order, offset=8), changed + QUIET + 5)
    assert f"stage 2 failed: {FOURTH}" in v1["degraded"]


def test_a_rebuild_reading_a_redrive_decides_the_same_in_any_order():
    def play(state, letters):
        for headers, letter in letters:
            _fail(state, letter, T0 + 20, headers)
        return state.summary(T0 + 4 + QUIET), stage3(state.tick(T0 + 4 + QUIET))

    order, _ = _ordered_fourth(new_state())
    first, second = _letter(order), _letter(order, offset=8)
    letters = [((), first), (_redrive_mark(first), first), ((), second),
               (_redrive_mark(second, at="2026-12-07T04:00:00Z"), second)]
    outcomes = []
    for arrangement in (letters, letters[::-1], letters[2:] + letters[:2]):
        state = new_state()
        _ordered_fourth(state)
        outcomes.append(play(state, arrangement))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert outcomes[0][1] == []  # redriven twice, failed twice: the second redrive runs


def test_letters_of_one_record_under_two_categories_are_one_failure():
    # The record failed, was redelivered (a restart before its commit) and
    # failed again under another category: two letters, one failure of one
    # order. Counted as two, one redrive could not put the order back in
    # flight, and its candidate closed degraded while the redriven order ran.
    state = new_state()
    order, changed = _ordered_fourth(state)
    first = _letter(order)
    again = _letter(order, category="retries_exhausted", reason="worker lost, 3 attempts")
    assert json.loads(first)["event_id"] != json.loads(again)["event_id"]
    _fail(state, first, changed + 10)
    _fail(state, again, changed + 11)
    assert _fail(state, first, changed + 20, _redrive_mark(first)) == []
    assert stage3(state.tick(changed + QUIET)) == []  # redriven: in flight, waits up to WAIT
    [v1] = _fail(state, _letter(order, offset=8), changed + QUIET + 5)
    assert f"stage 2 failed: {FOURTH}" in v1["degraded"]


def _unreadable(order: contract.Message, *, placed: bool) -> bytes:
    """A letter whose original is no order the contract reads (the value a
    schema refuses), the order's identity beside it: the planner's own for
    an order it could not send has no partition or offset (``placed``
    False: planner_publishing.refused_order)."""
    letter = contract.decode(_letter(order), expected="dead_letter")
    original = dict(letter["original"], value='{"pipeline": 7}')
    if not placed:
        original = {k: v for k, v in original.items() if k not in ("partition", "offset")}
    body = dict(letter.body, original=original, order=order_identity(order.body))
    return contract.encode(contract.Message("dead_letter", body))


def test_an_unsent_order_s_letter_counts_by_its_identity_a_placed_record_s_does_not():
    # Only the planner's letter of an order never placed on its topic reads
    # its identity when the original is no order (session 45): a record on
    # the topic that is no order was no order the planner sent.
    order, _ = _ordered_fourth(new_state())
    unsent = stage2_failure(_unreadable(order, placed=False), STAGE2)
    assert unsent is not None and unsent.work_id == order["work_id"]
    assert unsent.failed_record == unsent.letter_id  # no place: keyed by its letter
    assert stage2_failure(_unreadable(order, placed=True), STAGE2) is None
