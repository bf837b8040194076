"""Which hold record a planner takes back from its ``holds`` topic (pure)."""

from __future__ import annotations

from calstream.daemon.deciders.holds import hold_to_restore

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
