"""A stage-3 candidate and its members' stage 2 (pure logic, no broker).

A member whose stage-2 order the planner sent and whose product has not come
is *in flight*: a stage-2 backlog, not a loss. It keeps the candidate waiting
past ``stage3_quiet_period``, up to ``stage3_stage2_wait``; the quiet period
keeps its meaning for what never arrived or was never ordered. A candidate
none of whose members has a stage-2 product orders nothing when it would
close: it is *abandoned* (not open, listed as such) until a product comes.
"""

from __future__ import annotations

from calstream.daemon.deciders.planner_state import PlannerState
from calstream.steps.associations import Exposure
from calstream.topics import contract

from .test_level3_state import QUIET, SETTLE, T0, cal, dither, feed, rate, stage3

WAIT = 5 * QUIET  # stage3_stage2_wait in these tests


def new_state(**kw) -> PlannerState:
    return PlannerState(companion_wait=60.0, level3_settle=SETTLE, level3_quiet_period=QUIET,
                        level3_stage2_wait=WAIT, **kw)


def _three_calibrated_fourth_ordered(state) -> float:
    """Dithers 1-3 calibrated, dither 4 arrived and ordered (its stage 2 queued);
    the time of the candidate's last change."""
    for n in (1, 2, 3):
        feed(state, dither(n), T0 + n)
    emits = state.observe(rate(dither(4), T0 + 4), T0 + 4)
    assert [e.topic for e in emits] == ["work.stage2"]  # dither 4 is in flight
    return T0 + 4


def test_a_stage2_backlog_longer_than_the_quiet_period_closes_nothing_degraded():
    state = new_state()
    changed = _three_calibrated_fourth_ordered(state)
    assert stage3(state.tick(changed + QUIET)) == []
    assert stage3(state.tick(changed + WAIT - 1)) == []
    cand = state.summary(changed + WAIT - 1)["level3"]["candidates"][0]
    assert cand["waiting_for"]["stage2"].startswith("jw01234001001_02101_00004_nrcb1")
    # The backlog drains: one complete mosaic, nothing degraded first.
    late = changed + WAIT - 1
    state.observe(cal(dither(4), late), late)
    [v1] = stage3(state.tick(late + SETTLE))
    assert v1["version"] == 1 and v1["degraded"] is None and len(v1["inputs"]) == 4


def test_past_the_bound_it_closes_degraded_naming_the_members_in_flight():
    state = new_state()
    changed = _three_calibrated_fourth_ordered(state)
    assert stage3(state.tick(changed + WAIT - 1)) == []
    [v1] = stage3(state.tick(changed + WAIT))
    assert "jw01234001001_02101_00004_nrcb1" in v1["degraded"]
    assert "stage3_stage2_wait" in v1["degraded"] and len(v1["inputs"]) == 3
    # Its product, however late, supersedes.
    late = changed + 2 * WAIT
    state.observe(cal(dither(4), late), late)
    [v2] = stage3(state.tick(late + SETTLE))
    assert v2["version"] == 2 and v2["degraded"] is None and len(v2["inputs"]) == 4


def test_a_member_never_ordered_still_closes_after_the_quiet_period():
    state = new_state()
    for n in (1, 2, 3):
        feed(state, dither(n), T0 + n)
    # Arrived, but its stage-2 order was never sent (here: the level-3 state
    # told of the arrival alone, as for a stage 2 waiting for companions).
    state.stage3.observe_arrival(Exposure("jw01234001001_02101_00004_nrcb1", dither(4)),
                                 since=T0 + 4, provisional=False, now=T0 + 4)
    assert stage3(state.stage3.tick(T0 + 4 + QUIET - 1)) == []
    [v1] = state.stage3.tick(T0 + 4 + QUIET)
    assert "no stage-2 product" in v1["degraded"] and len(v1["inputs"]) == 3


def test_a_candidate_with_no_stage2_product_is_abandoned_then_reopened_by_a_late_one():
    state = new_state()
    for n in (1, 2):
        state.observe(rate(dither(n, nexp=2), T0 + n), T0 + n)  # both ordered, none comes
    assert stage3(state.tick(T0 + 2 + WAIT - 1)) == []
    assert state.summary(T0 + 2 + WAIT - 1)["level3"]["open"] == 1
    assert stage3(state.tick(T0 + 2 + WAIT)) == []  # nothing to make
    summary = state.summary(T0 + 2 + WAIT)["level3"]
    assert summary["open"] == 0 and summary["candidates"] == []
    [abandoned] = summary["abandoned"]
    assert abandoned["members"] == 2 and "no member has a stage-2 product" in abandoned["reason"]
    assert "jw01234001001_02101_00001_nrcb1" in abandoned["reason"]
    assert stage3(state.tick(T0 + 10 * WAIT)) == []  # and stays so
    # A late stage-2 product re-opens it; the other's comes later still.
    late = T0 + 10 * WAIT
    state.observe(cal(dither(1, nexp=2), late), late)
    summary = state.summary(late)["level3"]
    assert summary["open"] == 1 and summary["abandoned"] == []
    assert stage3(state.tick(late + WAIT - 1)) == []
    state.observe(cal(dither(2, nexp=2), late + WAIT - 1), late + WAIT - 1)
    [v1] = stage3(state.tick(late + WAIT - 1 + SETTLE))
    assert v1["version"] == 1 and v1["degraded"] is None and len(v1["inputs"]) == 2
    assert state.summary(late + WAIT + SETTLE)["level3"]["abandoned"] == []


def test_a_rebuild_from_the_same_events_decides_the_same():
    events = []
    for n in (1, 2, 3):
        events += [rate(dither(n), T0 + n), cal(dither(n), T0 + n + 0.5)]
    events.append(rate(dither(4), T0 + 4))
    for n in (1, 2):  # a second observation: ordered, never calibrated
        events.append(rate(dither(n, nexp=2, OBSERVTN="002"), T0 + 5 + n))
    ticks = [T0 + 4 + QUIET, T0 + 8 + WAIT, T0 + 3 * WAIT]
    late = cal(dither(4), T0 + 2 * WAIT)

    def play(state, at_times):
        out = []
        for e in events:
            out += state.observe(e, contract.parse_time(e["emitted_at"]).timestamp())
        for t in ticks[:2]:
            out += state.tick(t)
        out += state.observe(late, T0 + 2 * WAIT)
        out += state.tick(ticks[2])
        return out

    first = new_state()
    sent = [e.message for e in play(first, None) if e.topic.startswith("work.")]
    assert [o["version"] for o in sent if o["stage"] == "stage3"] == [1, 2]  # degraded, then full
    summary = first.summary(T0 + 3 * WAIT)["level3"]
    assert [a["members"] for a in summary["abandoned"]] == [2]

    again = new_state()
    for o in sent:
        again.restore_order(o)
    assert [e for e in play(again, None) if e.topic.startswith("work.")] == []
    assert again.summary(T0 + 3 * WAIT) == first.summary(T0 + 3 * WAIT)

