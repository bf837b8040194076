"""calstream_missing_exposures{program}: its series are bounded.

The program is a record's (a product event's header, a plan): a forger
sending visits of many programs, each promising exposures that never come,
made one series per program, and one set to 0 but kept for the daemon's
life once its program missed nothing: memory and every scrape grew without
bound (up to 100,000 programs, each forged anew)."""

from __future__ import annotations

from types import SimpleNamespace

from calstream.daemon.deciders.level3_status import MISSING_PROGRAM_SERIES, program_series
from calstream.daemon.doers import planner_status
from calstream.daemon.doers.planner_clock import PlannerClock
from calstream.daemon.operations.metrics import Metrics


def _planner(metrics: Metrics, by_program: dict[str, int]) -> SimpleNamespace:
    summary = {"waiting": 0, "held": 0, "held_for_direct_image": 0, "oldest_hold_age": 0.0,
               "hold_times_unreadable": [],
               "level3": {"open": len(by_program), "missing_by_program": by_program,
                          "oldest_missing_age": 0.0, "abandoned": [], "abandoned_count": 0}}
    return SimpleNamespace(metrics=metrics, programs_missing=set(), clock=PlannerClock(),
                           state=SimpleNamespace(summary=lambda now, limit=None: summary),
                           holds={}, states={}, pointing_waiting=())


def _series(metrics: Metrics) -> dict[str, float]:
    return {s.labels["program"]: s.value for m in metrics.registry.collect()
            if m.name == "calstream_missing_exposures" for s in m.samples}


def test_many_programs_make_a_bounded_number_of_series_and_none_is_lost():
    metrics = Metrics()
    planner = _planner(metrics, {})
    for start in (0, 1000):  # a thousand programs, then a thousand others
        by_program = {f"{n:05d}": 1 + n % 3 for n in range(start, start + 1000)}
        planner.state = _planner(metrics, by_program).state
        planner_status._set_gauges(planner)
        series = _series(metrics)
        assert len(series) <= MISSING_PROGRAM_SERIES + 1, len(series)
        assert sum(series.values()) == sum(by_program.values())  # the rest under "other"
        assert "other" in series


def test_a_few_programs_keep_their_own_series_and_go_to_0():
    metrics = Metrics()
    planner = _planner(metrics, {"01234": 3, "04567": 1})
    planner_status._set_gauges(planner)
    assert _series(metrics) == {"01234": 3, "04567": 1}
    planner.state = _planner(metrics, {"01234": 2}).state
    planner_status._set_gauges(planner)
    assert _series(metrics) == {"01234": 2, "04567": 0}


def test_program_series_keeps_the_programs_missing_most():
    series = program_series({"00001": 5, "00002": 1, "00003": 9}, limit=2)
    assert series == {"00003": 9, "00001": 5, "other": 1}
