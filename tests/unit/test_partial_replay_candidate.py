"""A partial replay (`calstream replay --namespace r1 --exposure ...`, or a
--since that cuts a visit) leaves its stage-3 candidate missing the
exposures it did not replay. What the operator sees and what ends it
(docs/operations.md, "Replay and promotion")."""

from __future__ import annotations

from types import SimpleNamespace

from calstream.daemon.doers import planner_status
from calstream.daemon.doers.planner_clock import PlannerClock
from calstream.daemon.operations.metrics import Metrics

from .test_level3_state import QUIET, SETTLE, T0, dither, feed, new_state, stage3
from .test_missing_exposure_series import _series


def test_a_partial_replay_s_candidate_closes_degraded_by_itself_and_the_rest_supersedes():
    """It does not wait for ever: stage3_quiet_period after its last new
    member it closes, degraded, and is no longer listed as missing."""
    state = new_state(namespace="r1")
    for n in (1, 2):  # 2 of the visit's 4 dithers replayed
        feed(state, dither(n), T0 + n)
    assert len(state.summary(T0 + 5)["level3"]["missing"]) == 2  # `[namespace r1]: 2`
    assert stage3(state.tick(T0 + 3 + QUIET - 1)) == []
    [v1] = stage3(state.tick(T0 + 3 + QUIET))
    assert v1["degraded"] and len(v1["inputs"]) == 2
    assert state.summary(T0 + 3 + QUIET)["level3"]["missing"] == {}
    # Replaying the rest into the same namespace makes the whole product: version 2.
    later = T0 + 10 * QUIET
    orders = feed(state, dither(3), later) + feed(state, dither(4), later + 1)
    [v2] = orders + stage3(state.tick(later + 2 + SETTLE))
    assert v2["version"] == 2 and v2["degraded"] is None and len(v2["inputs"]) == 4


def test_a_replay_namespace_s_missing_exposures_are_not_in_the_live_gauges():
    """calstream_missing_exposures and the oldest-missing age (what
    CalstreamExposuresMissing pages on) are the live namespace's only: a
    partial replay's waiting candidate pages nobody."""
    live, replay = new_state(), new_state(namespace="r1")
    for n in (1, 2):
        feed(replay, dither(n), T0 + n)
    assert replay.summary(T0 + 5)["level3"]["missing_by_program"] == {"01234": 2}
    metrics = Metrics()
    planner = SimpleNamespace(metrics=metrics, programs_missing=set(), clock=PlannerClock(),
                              state=live, states={"live": live, "r1": replay},
                              holds={}, pointing_waiting=())
    planner_status._set_gauges(planner)
    assert _series(metrics) == {}
    assert metrics.oldest_missing_age._value.get() == 0
