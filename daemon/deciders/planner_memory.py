"""When the planner starts again from its own snapshot to bound its memory (pure).

A record the planner decides stays in memory as the event it was parsed
into, about 9 kB per product event (bench/planner_memory.py), while the same
record restored from a snapshot is about 1.6 kB until a decision reads it
(deciders/lazy_records.py). A planner that decides for weeks would grow
until the kernel killed it at its container's limit, and the standby or a
restart would then take over: healed, but by an out-of-memory kill. Instead,
right after writing a snapshot (which covers every record it decided), a
planner over its memory budget starts again in the same process from that
snapshot: the restart path that tests hold to the same decisions as a full
rebuild, with a tail of nothing.

The memory the old state freed is not given back to the system (the
allocator keeps its arenas mapped), but the restored state and the next
decisions reuse it: the resident size stops growing rather than falls. So a
compaction is due when the memory in use reaches the budget *and* has grown
by a tenth of the budget since the last one; a planner whose restored
history alone is over its budget is then not restarted again and again
(it needs a larger budget: docs/operations.md, "Planner memory").
"""

from __future__ import annotations

GROWTH = 0.1  # of the budget, since the last compaction
MIN_RECORDS = 10_000  # decided by this planner since it started: no restart loop at start
SHARE_OF_LIMIT = 0.75  # of the container's limit, when no budget is configured


def budget_bytes(configured_mb: int | None, container_limit: int | None) -> int | None:
    """The planner's memory budget: ``planner_memory_mb`` MiB if set (0: no
    budget), else three quarters of its container's memory limit, else none."""
    if configured_mb is not None:
        return configured_mb * 2**20 if configured_mb > 0 else None
    if container_limit:
        return int(container_limit * SHARE_OF_LIMIT)
    return None


def compaction_due(in_use: int, budget: int | None, in_use_at_last: int,
                   records: int, min_records: int) -> bool:
    """``in_use``: bytes this process uses now; ``in_use_at_last``: at the
    last compaction (0 before any); ``records``: records this planner decided
    since it started."""
    return (budget is not None and records >= min_records and in_use >= budget
            and in_use >= in_use_at_last + GROWTH * budget)
