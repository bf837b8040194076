"""Which stages' worker pools start their workers with the daemon, and which
start them only when their first item comes (the ``warm_workers`` setting).

A worker's warm-up imports jwst: seconds of CPU. Warming at start (the
default) spends them while the daemon starts, so the first exposure after a
start is not held up by them; that is what a production daemon wants, where
every stage gets work soon. Warming on first work spends them only for a
stage that gets work: a daemon of many roles where some stage is rarely fed
(a stage-3 pool on a detector-only night), or a short-lived daemon (tests,
a demo), saves the import and the memory of idle workers; the first item of
such a stage waits for the warm-up instead (docs/operations.md).

The setting: "at_start" (every pool), "on_first_work" (none), or the names
of the stages whose pools warm at start (the others on first work).
"""

from __future__ import annotations

from collections.abc import Iterable

AT_START = "at_start"
ON_FIRST_WORK = "on_first_work"
MODES = (AT_START, ON_FIRST_WORK)


def check_warm_workers(setting: Iterable[str], stage_names: Iterable[str]) -> list[str]:
    """The setting, checked: one mode alone, or known stage names (at least one)."""
    chosen = list(setting)
    known = list(stage_names)
    modes = [c for c in chosen if c in MODES]
    if modes and len(chosen) > 1:
        raise ValueError(f"{modes[0]!r} stands alone: give one of {', '.join(MODES)}, "
                         "or the stages to warm at start")
    unknown = [c for c in chosen if c not in MODES and c not in known]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {known}, or one of "
                         f"{', '.join(MODES)}")
    if not chosen:
        raise ValueError(f"empty: give {ON_FIRST_WORK!r} to warm no pool at start")
    return chosen


def warms_at_start(setting: Iterable[str], stage: str) -> bool:
    """Whether ``stage``'s pool starts its workers with the daemon."""
    chosen = list(setting)
    if chosen == [AT_START]:
        return True
    if chosen == [ON_FIRST_WORK]:
        return False
    return stage in chosen
