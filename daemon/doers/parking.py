"""Parking on an infrastructure fault, for whatever work meets one.

A full or read-only disk, CRDS out of reach: retried ``max_attempts`` times
with jittered backoff, then *parked*, shown in ``calstream_parked_items``
and re-checked every ``park_recheck_seconds`` until it clears
(deciders/retry_policy.py decides the delays). The work item runner parks
whole runs; the planner parks the records it keeps (a plan, a hold), its snapshot,
and a send the broker does not acknowledge (cause ``broker_unreachable``);
a stage's consumer shows a record its handler must retry as parked.
Any other error is raised as it is: it is not an infrastructure fault.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio

from calstream.daemon.deciders.retry_policy import INFRASTRUCTURE, Backoff, after_run
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.failures import STORE_CAUSES, error_text, infrastructure_cause, with_place

log = logging.getLogger("calstream.parking")

T = TypeVar("T")


class Parked:
    """One item's stay in the parked state, shown by calstream_parked_items;
    ``root``: the directory it was writing under, labelled for a disk that
    refuses (which disk to free; nothing for CRDS or the broker)."""

    def __init__(self, metrics: Metrics, stage: str, cause: str,
                 root: str | os.PathLike | None = None) -> None:
        self.metrics, self.stage = metrics, stage
        self.since = time.monotonic()
        self._shown(cause, root)

    def _shown(self, cause: str, root: str | os.PathLike | None) -> None:
        where = os.fspath(root) if root is not None and cause in STORE_CAUSES else ""
        self.gauge = self.metrics.parked.labels(stage=self.stage, cause=cause, root=where)
        self.cause, self.where = cause, where
        self.gauge.inc()
        self.metrics.parked_total.labels(stage=self.stage, cause=cause).inc()

    def moved(self, cause: str, root: str | os.PathLike | None = None) -> str | None:
        """The item, still parked, now waits on ``cause`` (under ``root``):
        shown there, no longer on the fault it parked on (a disk freed, and
        CRDS out of reach since), which it returns; None if the same. Its
        time parked runs on."""
        where = os.fspath(root) if root is not None and cause in STORE_CAUSES else ""
        if (cause, where) == (self.cause, self.where):
            return None
        was = self.cause
        self.gauge.dec()
        self._shown(cause, root)
        return was

    def elapsed(self) -> float:
        return time.monotonic() - self.since

    def release(self) -> None:
        self.gauge.dec()


class Parking:
    """The faults in a row of one piece of work (``what``): the delay before
    its next try, and its park, counted once, until ``resumed``. ``root``:
    the directory its writes go under, named where the error names none."""

    def __init__(self, cfg: Any, metrics: Metrics, *, stage: str, what: str,
                 log_context: dict[str, Any] | None = None,
                 max_attempts: int | None = None,
                 root: str | os.PathLike | None = None) -> None:
        self.cfg, self.metrics, self.stage, self.what = cfg, metrics, stage, what
        self.root = root
        # Fewer quick retries where one try is itself a long wait (a broker's time-out).
        self.max_attempts = max_attempts or cfg.max_attempts
        # Never left out by the log's flood control (operations/logs.py).
        self.extra = {"extra": {**(log_context or {"stage": stage}), "fault": "infrastructure"}}
        self.failures = 0
        self.parked: Parked | None = None
        self.retry_at = 0.0  # monotonic: when the next try is due

    def failed(self, cause: str, exc: BaseException) -> float:
        """One more failure on ``cause``; the seconds to wait before the next try."""
        self.failures += 1
        step = after_run(f"{INFRASTRUCTURE}:{cause}", self.failures,
                         max_attempts=self.max_attempts,
                         backoff=Backoff(self.cfg.retry_backoff),
                         park_recheck=self.cfg.park_recheck_seconds, jitter=random.random())
        # A disk's fault names the directory written when its error names none.
        where = self.root if cause in STORE_CAUSES else None
        if step.action == "park" and self.parked is None:
            self.parked = Parked(self.metrics, self.stage, step.cause, self.root)
            log.warning("%s parked on an infrastructure fault (%s): %s; re-checked every "
                        "%.0fs, nothing dropped", self.what, step.cause,
                        with_place(error_text(exc), where),
                        self.cfg.park_recheck_seconds, **self.extra)
        elif step.action == "park" and (was := self.parked.moved(step.cause, self.root)):
            log.warning("%s now parked on %s, no longer on %s: %s", self.what, step.cause, was,
                        with_place(error_text(exc), where), **self.extra)
        elif step.action == "retry":
            log.warning("%s failed (%s); retry %d/%d in %.1fs", self.what,
                        with_place(error_text(exc), where), self.failures + 1,
                        self.max_attempts,
                        step.delay, **self.extra)
        self.retry_at = time.monotonic() + step.delay
        return step.delay

    def resumed(self) -> None:
        if self.parked is not None:
            log.warning("%s resumed after %.1fs parked (%s)", self.what, self.parked.elapsed(),
                        self.parked.cause, **self.extra)
            self.parked.release()
        self.parked, self.failures = None, 0


async def until_done(attempt: Callable[[], Awaitable[T]], parking: Parking,
                     cause_of: Callable[[BaseException], str | None] = infrastructure_cause) -> T:
    """``attempt()`` awaited again until no fault ``cause_of`` names stops it
    (by default a disk or CRDS fault; any other error is raised)."""
    try:
        while True:
            try:
                done = await attempt()
            except Exception as exc:  # noqa: BLE001 - cause_of decides; the rest is raised
                cause = cause_of(exc)
                if cause is None:
                    raise
                await anyio.sleep(parking.failed(cause, exc))
                continue
            parking.resumed()
            return done
    finally:
        if parking.parked is not None:  # cancelled while parked
            parking.parked.release()
            parking.parked = None


def in_thread(work: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """``work`` as an attempt for ``until_done``, run in a worker thread."""
    return partial(anyio.to_thread.run_sync, work)
