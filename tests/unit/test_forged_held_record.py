"""A "held" record for an exposure the planner has no product event of.

The holds topic is the planner's, but a broker is shared: a forged held
record, or the record of an exposure whose product events are gone, is taken
back at a restart (holds.hold_to_restore: a hold is restrictive) and then
kept in the ledger. It kept `calstream_oldest_hold_age_seconds` rising, and
`CalstreamHoldTooOld` up, for good: `calstream holds release` sent its update
and the planner dead-lettered it ("unknown exposure"), the hold unchanged.
Now the operator's release clears it (a released record, path operator),
and /planner lists such holds by name.
"""

from __future__ import annotations

from calstream.daemon.deciders.holds import WaitingUpdates, hold_record
from calstream.daemon.deciders.planner_state import PlannerState, observe_pointing_everywhere
from calstream.topics import contract

from .test_planner_state import T0, WAIT, imaging, kinds, product, update

FORGED = "jw09999001001_02101_00001_nrcb1"
DIGEST = "sha256:" + "b" * 64


def _restored_with_forged_hold() -> PlannerState:
    state = PlannerState(companion_wait=WAIT)
    state.observe(product(imaging(1)), T0)  # some exposure the planner does know
    forged = hold_record(FORGED, dict(exposure_id=FORGED, program="09999", state="held",
                                      since=contract.iso(T0 - 86400), digest=DIGEST,
                                      reason="ENGQLPTG=PLANNED", release=None), DIGEST, {})
    state.restore_hold(forged.message)  # as the restore takes a record it has none of
    return state


def test_an_operator_s_release_clears_a_hold_of_an_exposure_without_a_product():
    state = _restored_with_forged_hold()
    assert state.summary(T0)["held"] == 1
    waiting = WaitingUpdates()
    emits = observe_pointing_everywhere([state], update(FORGED, "release", digest=DIGEST),
                                        T0 + 5, waiting)
    assert kinds(emits) == [("holds", FORGED)]
    record = emits[0].message
    assert record["state"] == "released" and record["release"]["path"] == "operator"
    assert record["release"]["by"] == "ops"
    summary = state.summary(T0 + 10)
    assert summary["held"] == 0 and summary["oldest_hold_age"] == 0.0
    assert len(waiting) == 0  # nothing left to wait for: the record says it is released


def test_a_correction_or_another_content_s_release_does_not_clear_it():
    state = _restored_with_forged_hold()
    for wrong in (update(FORGED, "correct"),
                  update(FORGED, "release", digest="sha256:" + "c" * 64)):
        emits = observe_pointing_everywhere([state], wrong, T0 + 5)
        assert [e.topic for e in emits] == ["deadletter"]
    assert state.summary(T0 + 10)["held"] == 1


def test_the_planner_s_view_names_a_hold_no_product_backs(tmp_path):
    from calstream.daemon.doers import planner_status

    from .test_planner_record_runs import _planner

    planner, _ = _planner(tmp_path, "planner")
    planner.state.observe(product(imaging(1)), T0)
    forged = _restored_with_forged_hold().holds[FORGED]
    planner.holds[FORGED] = forged  # one map of holds, shared by every namespace
    view = planner_status.view(planner)
    assert view["held_without_product"] == [FORGED]
    assert view["held_without_product_count"] == 1
