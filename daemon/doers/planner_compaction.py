"""The planner's memory budget: when its state has grown past it, the
planner starts again from the snapshot it has just written (a compaction:
deciders/planner_memory.py says why and when)."""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING

from calstream.daemon.deciders import planner_memory
from calstream.daemon.doers.process_memory import container_limit_bytes, resident_in_use_bytes

if TYPE_CHECKING:
    from calstream.daemon.doers.planner_loop import Planner


MEMORY_CHECK_SECONDS = 1.0  # reading the memory in use costs two reads: not per record


def over_budget(planner: Planner) -> bool:
    if planner.memory_budget is None:
        return False
    now = time.monotonic()
    if now - planner.memory_checked_at >= MEMORY_CHECK_SECONDS:
        planner.memory_checked_at = now
        planner.memory_over = _compaction_due(planner, resident_in_use_bytes())
    return planner.memory_over


def _compaction_due(planner: Planner, in_use: int) -> bool:
    return planner_memory.compaction_due(in_use, planner.memory_budget,
                                         planner.in_use_at_last_compaction,
                                         planner.records_seen, planner_memory.MIN_RECORDS)


class Compaction(Exception):  # noqa: N818 - not an error: the planner starts again
    """The planner is over its memory budget just after writing a snapshot:
    it starts again from that snapshot (deciders/planner_memory.py says why).
    ``role``: active or standby, for the metric."""

    def __init__(self, in_use: int, budget: int, role: str = "active"):
        super().__init__(f"{in_use / 2**20:.0f} MiB in use, budget {budget / 2**20:.0f} MiB")
        self.in_use, self.budget, self.role = in_use, budget, role


def memory_budget(planner: Planner) -> int | None:
    return planner_memory.budget_bytes(planner.cfg.planner_memory_mb, container_limit_bytes())


def compact_when_due(planner: Planner) -> None:
    """Raise Compaction if the planner, its snapshot just written, is over
    its memory budget (and grew since its last compaction)."""
    if planner.memory_budget is None:
        return
    in_use = resident_in_use_bytes()
    if _compaction_due(planner, in_use):
        acting = planner.standby is None or planner.standby.gate.acting
        raise Compaction(in_use, planner.memory_budget, "active" if acting else "standby")
    planner.memory_over = False


def drop_frozen_state() -> None:
    """After a compaction: the old state's objects, frozen at its restore, unfrozen
    and collected (1-2 s a million objects), or their cycles would stay for good."""
    gc.unfreeze()
    gc.collect()
