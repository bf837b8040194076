"""How long a heartbeat file has been silent, as this observer saw it.

A heartbeat is a file another process touches (a work claim, a pending
previews owner). Judging it by ``time.time() - st_mtime`` compares two clocks
that need not agree: the writer's (or the NFS server's) and the observer's
wall clock, which steps (NTP, a VM resumed, an operator's ``date``). A step
forward made a live claim look stale at first sight (a second run of the same
work); a step back made a dead one look fresh for as long as the step (work
waiting for a person, with negative ages).

So the mtime is only compared with itself: the observer notes when it first
saw each file's (inode, mtime) and counts, by its own monotonic clock, how
long that stayed unchanged. Any change is a beat. The cost: a heartbeat first
seen already dead is waited out for its bound once (docs/design.md, "Clocks").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

# Entries not looked at for this long are forgotten: their waits were given up
# (a cancelled run); a look later starts counting again, which only delays.
FORGET_AFTER = 3600.0
_PRUNE_ABOVE = 256


class HeartbeatSilence:
    """Per path, the (inode, mtime) last seen and since when (monotonic)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self.monotonic = monotonic
        # path -> (signature, first seen with it, last looked at)
        self._seen: dict[str, tuple[tuple[int, int, int], float, float]] = {}

    def silent_for(self, path: os.PathLike | str, seen: os.stat_result) -> float:
        """Seconds (>= 0, the observer's monotonic) that ``seen``'s inode and
        mtime have stayed as they are; 0 at the first look and after any change."""
        now = self.monotonic()
        key = os.fspath(path)
        signature = (seen.st_dev, seen.st_ino, seen.st_mtime_ns)
        before = self._seen.get(key)
        since = before[1] if before is not None and before[0] == signature else now
        self._seen[key] = (signature, since, now)
        if len(self._seen) > _PRUNE_ABOVE:
            self._prune(now)
        return max(0.0, now - since)

    def forget(self, path: os.PathLike | str) -> None:
        """Gone, or ours now: nothing to count."""
        self._seen.pop(os.fspath(path), None)

    def _prune(self, now: float) -> None:
        for key in [k for k, (_, _, last) in self._seen.items() if now - last > FORGET_AFTER]:
            del self._seen[key]
