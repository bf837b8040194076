"""The planner's time: the wall clock with its steps taken out
(deciders/clock_steps.py, doers/planner_clock.py). A forward step must not
close waits early (a degraded stage-2, an incomplete stage-3); a backward one
must not stretch them. Explicit clock readings: nothing sleeps."""

from __future__ import annotations

import pytest

from calstream.daemon.deciders.clock_steps import STEP_TOLERANCE, SteppedWall
from calstream.daemon.doers.planner_clock import PlannerClock
from calstream.daemon.operations.metrics import Metrics


def test_time_follows_the_monotonic_clock_between_looks():
    t = SteppedWall(wall=1_000_000.0, monotonic=50.0)
    assert t.now(50.0) == 1_000_000.0
    assert t.now(80.0) == 1_000_030.0


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_step_of_the_wall_clock_is_not_taken(step):
    t = SteppedWall(wall=1_000_000.0, monotonic=50.0)
    assert t.look(wall=1_000_001.0 + step, monotonic=51.0) == step
    assert t.now(51.0) == 1_000_001.0  # as if no step: a second passed
    assert t.offset == step  # the wall is that far from the planner's time
    assert t.look(wall=1_000_002.0 + step, monotonic=52.0) == 0.0  # counted once
    assert t.now(52.0) == 1_000_002.0


def test_a_slew_within_the_tolerance_is_followed():
    t = SteppedWall(wall=1_000_000.0, monotonic=50.0)
    small = STEP_TOLERANCE / 2
    assert t.look(wall=1_000_010.0 + small, monotonic=60.0) == 0.0
    assert t.now(60.0) == 1_000_010.0 + small
    assert t.offset == 0.0


def test_a_suspend_is_no_time_for_the_planner():
    """A VM suspended for an hour: the wall moved an hour, the monotonic clock
    (which does not count a suspend) did not; the planner's waits neither."""
    t = SteppedWall(wall=1_000_000.0, monotonic=50.0)
    assert t.look(wall=1_003_600.0, monotonic=50.5) == pytest.approx(3599.5)
    assert t.now(50.5) == 1_000_000.5


class Readings:
    def __init__(self):
        self.wall, self.mono = 1_000_000.0, 50.0

    def step(self, seconds: float, wall_step: float = 0.0) -> None:
        self.mono += seconds
        self.wall += seconds + wall_step


def test_the_planner_clock_counts_and_logs_a_step(caplog):
    r, metrics = Readings(), Metrics()
    clock = PlannerClock(metrics, wall=lambda: r.wall, monotonic=lambda: r.mono)
    r.step(1.0, wall_step=3600.0)
    with caplog.at_level("WARNING"):
        clock.check()
    assert clock.now() == 1_000_001.0
    assert metrics.planner_clock_steps._value.get() == 1
    assert metrics.planner_clock_offset._value.get() == 3600.0
    assert any("stepped" in rec.getMessage() for rec in caplog.records)
