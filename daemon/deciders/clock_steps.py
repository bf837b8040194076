"""The wall clock with its steps taken out (pure: the clocks' readings are given).

The planner's waits (a companion, a stage-3 quiet period) are deadlines in
wall time, as its snapshots keep them across restarts. Read straight from
``time.time()``, a step of the host's clock (NTP correcting a drifted host, a
VM resumed after a suspend, an operator's ``date``) moved every deadline at
once: a step forward closed waits early (a degraded stage 2, an incomplete
stage 3), a step back stretched them by the step.

Here the planner's time runs with the monotonic clock from a wall reading:
``now = monotonic + anchor``. Once a second the wall clock is looked at: how
far it moved, against how far the monotonic clock moved since the last look.
A difference within the tolerance is followed (a slew, the two calls' own
distance); a larger one is a step, and is not: for the planner's waits no
time passed. The wall's distance from the planner's time (``offset``) is
shown, and goes with the process: a restarted planner reads the wall again.
"""

from __future__ import annotations

# Two looks a second apart differ by microseconds without a step (NTP slews at
# most 500 ppm); a loop stalled for minutes stays well inside this.
STEP_TOLERANCE = 2.0


class SteppedWall:
    """The planner's time: the wall clock as first read, advanced by the
    monotonic clock, following the wall's slews and not its steps."""

    def __init__(self, *, wall: float, monotonic: float, tolerance: float = STEP_TOLERANCE):
        self.anchor = wall - monotonic
        self.tolerance = tolerance
        self.offset = 0.0  # the wall minus this time: the steps not taken
        self._last = (wall, monotonic)

    def now(self, monotonic: float) -> float:
        return monotonic + self.anchor

    def look(self, *, wall: float, monotonic: float) -> float:
        """Compare with the wall clock (once a second): the step found since the
        last look (0.0 if none; positive: the wall leapt forward)."""
        last_wall, last_monotonic = self._last
        self._last = (wall, monotonic)
        step = (wall - last_wall) - (monotonic - last_monotonic)
        if abs(step) <= self.tolerance:
            self.anchor += step  # a slew: followed
            return 0.0
        self.offset += step
        return step
