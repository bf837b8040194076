"""Which hold record a planner takes back from its ``holds`` topic, and what
``calstream holds list`` shows beside it (pure)."""

from __future__ import annotations

from calstream.daemon.deciders.holds import hold_to_restore, holds_shown

HELD = {"exposure_id": "jw04343001001_02101_00001_nrcb1", "state": "held",
        "digest": "sha256:" + "a" * 64, "release": None}
RELEASE = {"path": "operator", "at": "2026-12-01T00:00:00Z", "by": "x", "reason": "r",
           "digest": HELD["digest"], "update_event_id": "f" * 64}
RELEASED = {**HELD, "state": "released", "release": RELEASE}


def test_the_planner_s_own_record_wins_over_the_topic_s():
    assert hold_to_restore(RELEASED, HELD) is HELD  # a forged release over its own hold
    assert hold_to_restore(HELD, RELEASED) is RELEASED  # its own release stays


def test_a_record_it_has_none_of_is_taken_only_if_it_releases_nothing():
    assert hold_to_restore(HELD, None) is HELD
    assert hold_to_restore(RELEASED, None) is None
    # A WFSS grism's wait for its direct image carrying a pointing release aside.
    waiting = {**HELD, "waiting_for": "jw04343001001_02101_00002_nrcb1",
               "pointing_release": RELEASE}
    assert hold_to_restore(waiting, None) is None


OTHER = {**HELD, "exposure_id": "jw04343001001_02101_00002_nrcb1"}


def test_holds_list_shows_the_planner_s_record_and_marks_the_topic_s_that_differs():
    shown = holds_shown({HELD["exposure_id"]: RELEASED, OTHER["exposure_id"]: OTHER},
                        {HELD["exposure_id"]: HELD})
    mine, theirs = shown[HELD["exposure_id"]], shown[OTHER["exposure_id"]]
    assert (mine["state"], mine["source"], mine["holds_topic"]) == ("held", "planner", RELEASED)
    # The planner has no record of it: the topic's, marked so.
    assert (theirs["state"], theirs["source"], theirs["checked"]) == (
        "held", "holds topic", True)


def test_the_same_record_sent_by_another_is_no_difference():
    copy = {**HELD, "producer": {"host": "standby", "role": "planner"}}
    assert "holds_topic" not in holds_shown({HELD["exposure_id"]: copy},
                                            {HELD["exposure_id"]: HELD})[HELD["exposure_id"]]
    # Nothing on the topic (lost, not yet re-published): the planner's, unmarked.
    assert holds_shown({}, {HELD["exposure_id"]: HELD})[HELD["exposure_id"]] == {
        **HELD, "source": "planner"}


def test_without_the_planner_s_ledger_the_topic_s_records_are_shown_not_checked():
    shown = holds_shown({HELD["exposure_id"]: RELEASED}, None)
    assert shown == {HELD["exposure_id"]: {**RELEASED, "source": "holds topic",
                                           "checked": False}}
