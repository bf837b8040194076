"""Whether the broker is lost, and what to say about it: one line per change.

Pure: the supervisor (doers/broker_supervisor.py) feeds it one observation at
a time (the broker answered or not, and when) and logs what it returns, so an
outage is three lines (lost, still lost after the bound, back) instead of the
client library's hundreds of errors a second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class BrokerHealth:
    loss_bound: float  # lost longer than this: /healthz fails, "still lost" is said once
    lost_since: float | None = None
    said_still_lost: bool = False
    failures: int = 0

    def observe(self, ok: bool, now: float) -> str | None:
        """Record one probe; returns "lost", "still_lost", "back" or None (no change)."""
        if ok:
            self.failures = 0
            if self.lost_since is None:
                return None
            self.lost_since, self.said_still_lost = None, False
            return "back"
        self.failures += 1
        if self.lost_since is None:
            self.lost_since = now
            return "lost"
        if not self.said_still_lost and now - self.lost_since >= self.loss_bound:
            self.said_still_lost = True
            return "still_lost"
        return None

    def lost_for(self, now: float) -> float | None:
        return None if self.lost_since is None else now - self.lost_since

    def unhealthy(self, now: float) -> bool:
        lost = self.lost_for(now)
        return lost is not None and lost >= self.loss_bound

    def next_probe(self, interval: float = 1.0, cap: float = 15.0,
                   rng: random.Random | None = None) -> float:
        """Seconds to the next probe: ``interval`` while the broker answers;
        while it is lost, doubling with full jitter up to ``cap``, so that many
        daemons do not reconnect in step."""
        if not self.failures:
            return interval
        ceiling = min(cap, interval * 2 ** min(self.failures, 10))
        return interval + (rng or random).uniform(0, ceiling - interval)
