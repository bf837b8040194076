"""A hold whose ``since`` parse_time cannot read freezes no gauge (session 46).

Every way a hold comes into the planner (the holds topic, its ledger, its
snapshot, its own decisions) checks the record against the hold schema,
whose "date-time" is read by parse_time itself: the first test keeps the
two agreeing. Should a way in ever forget the check, one such hold made
every summary raise: the status counted a fault each second and every
gauge (held, the oldest hold's age, ...) and /planner kept its last value
for ever while the planner went on. Now that hold is counted as held, left
out of the oldest age, and reported as a status fault, the gauges set.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from calstream.daemon.deciders.holds import WaitingUpdates
from calstream.daemon.doers import planner_status
from calstream.daemon.doers.planner_publishing import Faults
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract

from .test_level3_state import T0, dither, new_state, rate

_HOLD = contract.build("hold", "a" * 64, exposure_id="jw01234001001_01101_00001_nrca1",
                       state="held", reason="ENGQLPTG=PLANNED", since="2026-12-08T00:00:00Z",
                       digest="sha256:" + "0" * 64, release=None).body


@pytest.mark.parametrize("since", [
    "2026-12-31T23:59:60Z", "2026-12-08t00:00:00z", "2026-12-08T24:00:00Z",
    "2026-12-08T00:00:00+24:00", "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999999-23:59",
    "2026-12-08T00:00:00-00:00", "2026-02-29T00:00:00Z", "2026-12-08T00:00:00.1234567Z"])
def test_a_hold_record_is_valid_only_with_a_since_the_summary_reads(since):
    try:
        contract.parse_time(since).timestamp()
        readable = True
    except ValueError:
        readable = False
    assert contract.is_valid("hold", dict(_HOLD, since=since)) is readable


def _planner_with_two_holds(bad_since: str):
    """Two exposures held by the planner's own decision (PLANNED pointing),
    the later one's record then given a time nothing reads."""
    state = new_state()
    for n, at in ((1, T0), (2, T0 + 100)):
        state.observe(rate(dither(n, nexp=2, ENGQLPTG="PLANNED"), at), at)
    first, later = sorted(state.holds, key=lambda e: state.holds[e]["since"])
    state.holds[later] = dict(state.holds[later], since=bad_since)
    metrics = Metrics()
    now = T0 + 1000
    planner = SimpleNamespace(
        clock=SimpleNamespace(now=lambda: now), caught_up=True, restored_from=None, plans={},
        states={"live": state}, holds=state.holds, pointing_waiting=WaitingUpdates(), metrics=metrics,
        programs_missing=set(), state=state, faults=Faults(metrics), last_view=None)
    return planner, state.holds[first], later, now


def test_one_unreadable_hold_time_leaves_the_gauges_and_the_view_counting(caplog):
    planner, first, later, now = _planner_with_two_holds("2026-12-31T23:59:60Z")
    with caplog.at_level(logging.ERROR, logger="calstream.planner"):
        planner_status.refresh(planner)
    metrics = planner.metrics
    oldest = now - contract.parse_time(first["since"]).timestamp()
    assert metrics.held_exposures._value.get() == 2
    assert metrics.oldest_hold_age._value.get() == oldest
    assert metrics.planner_faults.labels(part="status")._value.get() == 1
    assert f"since cannot be read, left out of the oldest hold's age (first: {later})" \
        in caplog.text
    live = planner.last_view["namespaces"]["live"]
    assert (live["held"], live["oldest_hold_age"]) == (2, oldest)


def test_a_since_of_another_type_is_left_out_the_same_way():
    planner, _, _, _ = _planner_with_two_holds(None)
    summary = planner.state.summary(planner.clock.now(), limit=0)
    assert summary["held"] == 2 and len(summary["hold_times_unreadable"]) == 1
