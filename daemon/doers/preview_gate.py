"""Previews wait while calibrations are in flight in their pool (issue 15).

A preview runs in the same warm workers as the calibrations, behind every
*queued* one (preview_runner.PREVIEW_PRIORITY). That alone still lets a
worker freed between two calibrations (before the consumer delivers the next
item) draw, beside a calibration on the other core: the benchmarks (bench/
README.md, sessions 15 and 18) saw previews take 2-3 % of the cores a batch
needed. So a preview first waits here until no calibration is in flight in
its pool (no work item its runner has taken and not yet announced), or at most ``max_wait``
seconds, so that a continuous stream never starves the pictures; then it asks
the pool for a worker as before.

The count is kept on the event loop only, around each of the runner's work
items, from the moment the runner takes it until its product event is out
(the runner is its pool's one caller for calibrations): the pool's threads
(its exchanges and hand-overs) never touch it, and a task a hand-over starts
is already counted by its own item. Counted around the pool's run alone, the
previews a batch held back were let go at its last run's end, beside that
run's sealing and commit, and at each moment between one run's end and the
next one's start (bench/README.md, session 19).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import anyio

from calstream.daemon.operations.metrics import Metrics

log = logging.getLogger("calstream.previews")


class PreviewGate:
    def __init__(self, *, max_wait: float, metrics: Metrics, stage: str) -> None:
        """``max_wait``: seconds a preview waits at most (0: never waits)."""
        self.max_wait = max_wait
        self.metrics = metrics
        self.stage = stage
        self.calibrations = 0  # in flight in the pool: running or waiting for a worker
        # Set when the count falls to 0; a new one each time it leaves 0 (made
        # there, on the loop: an anyio Event needs one).
        self._none_in_flight: anyio.Event | None = None

    @contextlib.contextmanager
    def calibrating(self) -> Iterator[None]:
        """Around a work item's whole way through its runner, on the event loop."""
        if self.calibrations == 0:
            self._none_in_flight = anyio.Event()
        self.calibrations += 1
        try:
            yield
        finally:
            self.calibrations -= 1
            if self.calibrations == 0:
                self._none_in_flight.set()

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        """Inside ``calibrating``: a stretch in which the item runs nothing (parked,
        waiting for its turn): previews need not wait for it."""
        self.calibrations -= 1
        if self.calibrations == 0:
            self._none_in_flight.set()
        try:
            yield
        finally:
            if self.calibrations == 0:
                self._none_in_flight = anyio.Event()
            self.calibrations += 1

    async def until_no_calibration(self) -> bool:
        """Return once no calibration is in flight (True), or once the preview
        has waited ``max_wait`` seconds (False: it goes beside them). Nothing
        is awaited after the last look at the count, so a caller that asks
        the pool for a worker at once asks while the count is still 0.
        Cancelled (the stage's task group, at a stop), it ends at once."""
        if self.calibrations == 0 or self.max_wait <= 0:
            return self.calibrations == 0
        waiting = self.metrics.previews_waiting.labels(stage=self.stage)
        waiting.inc()
        try:
            with anyio.move_on_after(self.max_wait):
                while self.calibrations:  # another may have started since the event was set
                    await self._none_in_flight.wait()
        finally:
            waiting.dec()
        if self.calibrations:
            log.debug("%s: previews drawn beside %d calibrations after waiting %.0fs "
                      "(preview_max_wait)", self.stage, self.calibrations, self.max_wait)
        return self.calibrations == 0
