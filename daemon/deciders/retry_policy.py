"""What to do after a run: publish, retry later, or give up (pure).

The worker pool classifies a failed run (steps/failures.py): ``transient``
(a lost worker, a time-out, a full disk: worth another attempt), ``permanent``
(bad data: the same input fails the same way) or ``skipped`` (no science
data). This module turns that and the attempt count into the next step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays doubling from ``first`` up to ``cap`` (None: no cap)."""

    first: float
    cap: float | None = None

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failure in a row (1, 2, ...)."""
        delay = self.first * 2 ** (max(failures, 1) - 1)
        return delay if self.cap is None else min(delay, self.cap)


# A handler that raises has found the broker or the disk unavailable (bad
# input is dead-lettered, not raised): its record is retried until it goes
# through, never skipped.
HANDLER_BACKOFF = Backoff(first=1.0, cap=60.0)


@dataclass(frozen=True)
class NextStep:
    action: str  # "publish" | "publish_skipped" | "retry" | "dead_letter"
    delay: float = 0.0  # retry: seconds to wait first
    category: str = ""  # dead_letter: "retries_exhausted" | "permanent_failure"


def after_run(kind: str, attempts: int, *, max_attempts: int, backoff: Backoff) -> NextStep:
    """The next step after attempt number ``attempts`` ended as ``kind``
    ("success", "skipped", "transient" or "permanent")."""
    if kind == "success":
        return NextStep("publish")
    if kind == "skipped":
        return NextStep("publish_skipped")
    if kind == "transient" and attempts < max_attempts:
        return NextStep("retry", delay=backoff.delay(attempts))
    return NextStep("dead_letter",
                    category="retries_exhausted" if kind == "transient" else "permanent_failure")
