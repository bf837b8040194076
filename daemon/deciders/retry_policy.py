"""What to do after a run: publish, retry later, or give up (pure).

The worker pool classifies a failed run (steps/failures.py): ``transient``
(a lost worker, a time-out: worth another attempt), ``permanent`` (bad data:
the same input fails the same way), ``skipped`` (no science data) or
``infrastructure:<cause>`` (a full or read-only product store, CRDS out of
reach or its cache incomplete). This module turns that and the attempt count
into the next step.

Infrastructure faults are never dead-lettered: the exposure is fine, and a
dead letter would need a person to redrive it once the disk or CRDS is back.
After ``max_attempts`` quick retries the item is *parked* (its record
uncommitted) and tried again every ``park_recheck`` seconds, one of its kind
at a time (doers/park_gates.py), until the cause clears; then it goes on by
itself. An item meeting the fault others of its kind are parked on parks at
once. Delays are jittered so that many parked items do not all hit a
recovering service at once.
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


INFRASTRUCTURE = "infrastructure"
JITTER = 0.25  # a delay is spread over +-25 %


@dataclass(frozen=True)
class NextStep:
    # "publish" | "publish_skipped" | "retry" | "park" | "dead_letter" | "done"
    # (done: found done elsewhere when a worker was free; nothing left to do)
    action: str
    delay: float = 0.0  # retry, park: seconds to wait before the next attempt
    category: str = ""  # dead_letter: "retries_exhausted" | "permanent_failure"
    cause: str = ""  # park (and its retries): what is broken, e.g. "disk_full"


def split_kind(kind: str) -> tuple[str, str]:
    """("infrastructure", "disk_full") for "infrastructure:disk_full"; (kind, "") otherwise."""
    base, _, cause = kind.partition(":")
    return base, cause


def jittered(delay: float, jitter: float) -> float:
    """``delay`` spread by ``jitter`` (a random number in [0, 1) the caller draws)."""
    return delay * (1 - JITTER + 2 * JITTER * jitter)


def after_run(kind: str, attempts: int, *, max_attempts: int, backoff: Backoff,
              park_recheck: float = 30.0, jitter: float = 0.5,
              parked_alike: bool = False) -> NextStep:
    """The next step after attempt number ``attempts`` ended as ``kind``
    ("success", "skipped", "transient", "permanent" or "infrastructure:<cause>");
    ``jitter`` is a random number in [0, 1) drawn by the caller (0.5: none).
    ``parked_alike``: work of the same kind is parked on this very cause, so
    the quick retries would only meet it again: parked at once."""
    if kind == "success":
        return NextStep("publish")
    if kind == "skipped":
        return NextStep("publish_skipped")
    base, cause = split_kind(kind)
    if base == INFRASTRUCTURE:
        if attempts < max_attempts and not parked_alike:
            return NextStep("retry", delay=jittered(backoff.delay(attempts), jitter), cause=cause)
        return NextStep("park", delay=jittered(park_recheck, jitter), cause=cause or "unknown")
    if kind == "transient" and attempts < max_attempts:
        return NextStep("retry", delay=jittered(backoff.delay(attempts), jitter))
    return NextStep("dead_letter",
                    category="retries_exhausted" if kind == "transient" else "permanent_failure")


@dataclass
class AttemptCount:
    """One item's attempts, as ``after_run`` is to count them. A fault of the
    infrastructure (a full disk, CRDS, a worker that died with the worker
    server) is nothing the run did: it spends none of the item's own
    attempts, and its quick retries count the faults in a row only. Counted
    together, a lost worker after a parked fault (attempts >= max_attempts)
    was dead-lettered ``retries_exhausted`` at its first loss."""

    made: int = 0  # every attempt: the log's and the dead letter's count
    counted: int = 0  # those that ended otherwise than on a fault of the infrastructure
    faults_in_row: int = 0  # the last ones that did

    def of(self, kind: str) -> int:
        """The ``attempts`` for ``after_run`` of the attempt under way, ended as ``kind``."""
        if split_kind(kind)[0] == INFRASTRUCTURE:
            return self.faults_in_row + 1
        return self.counted + 1

    def ended(self, kind: str) -> None:
        self.made += 1
        if split_kind(kind)[0] == INFRASTRUCTURE:
            self.faults_in_row += 1
        else:
            self.counted, self.faults_in_row = self.counted + 1, 0
