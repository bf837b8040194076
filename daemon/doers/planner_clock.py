"""The planner's clock: the host's wall clock without its steps
(deciders/clock_steps.py says why), checked once a second, a step logged and
counted. The readings are injectable: tests move them by hand."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from calstream.daemon.deciders.clock_steps import SteppedWall

log = logging.getLogger("calstream.planner")


class PlannerClock:
    def __init__(self, metrics: Any = None, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.metrics = metrics
        self._wall, self._monotonic = wall, monotonic
        self.time = SteppedWall(wall=wall(), monotonic=monotonic())
        self.anchor = self.time.anchor

    def now(self) -> float:
        """The planner's time (per event: one monotonic reading, as time.time() was)."""
        return self._monotonic() + self.anchor

    def check(self) -> None:
        """Once a second: follow the wall's slews; a step is logged and counted, not taken."""
        step = self.time.look(wall=self._wall(), monotonic=self._monotonic())
        self.anchor = self.time.anchor
        if not step:
            return
        log.warning("the wall clock stepped %+.1f s (NTP, a resumed VM, a hand-set date): the "
                    "planner's waits do not count it; its time is now %+.1f s from the wall "
                    "until a restart", step, self.time.offset)
        if self.metrics is not None:
            self.metrics.planner_clock_steps.inc()
            self.metrics.planner_clock_offset.set(self.time.offset)
