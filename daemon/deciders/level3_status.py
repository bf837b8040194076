"""Level-3 candidates in words, for status and metrics (pure).

What a candidate waits for, which expected exposures never came, and the
summary ``calstream status`` shows. These read whole candidates and visits,
so deciders/level3_state.py calls them only when someone reads the result,
never at a decision (a decision uses the counts it keeps).
"""

from __future__ import annotations

import heapq
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from calstream.daemon.deciders.level3_candidates import Candidate
from calstream.steps.completeness import visit_status

if TYPE_CHECKING:
    from calstream.daemon.deciders.level3_state import Level3State


def missing(state: Level3State, cand: Candidate) -> list[str]:
    planned = state._planned_keys.get(cand.key)
    if planned:
        cand.expected_by = "plan"
        return sorted(e for e in planned if e not in state.arrived)
    cand.expected_by = "headers"
    exposures = [e for v in cand.visits for e in state._tally(v).exposures.values()]
    status = visit_status(exposures, arrivals={e.exposure_id: state.arrived[e.exposure_id].since
                                               for e in exposures})
    missing = []
    for s in status.incomplete:
        named = [f"{s.visit}_{m}_{s.detector}" for m in s.missing]
        missing += named
        unnamed = s.missing_count - len(named)
        if unnamed > 0 or (s.expected is None and not named):
            missing.append(f"{s.visit} {s.detector}: "
                           + (f"{unnamed} more exposure(s)" if unnamed > 0
                              else "NEXPOSUR unknown"))
    return missing


def named_briefly(names: list[str], most: int = 100) -> str:
    """The first ``most`` names, then how many more. A visit may announce up
    to 100,000 exposures (NEXPOSUR's bound): a degraded order naming every
    one that never came would be megabytes, over the broker's 1 MB message
    limit, and no reader could use the list anyway."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def describe(state: Level3State, cand: Candidate) -> tuple[dict[str, str], list[str]]:
    """What ``cand`` waits for, in words (for status and metrics)."""
    members = sorted(cand.members)
    held = [m for m in members if m in cand.held]
    pending = [m for m in members if m in cand.uncalibrated and m not in cand.held]
    missing_ = missing(state, cand)
    waiting: dict[str, str] = {}
    if held:
        waiting["pointing"] = ", ".join(f"{m} has ENGQLPTG=PLANNED" for m in held)
    if pending:
        waiting["stage2"] = ", ".join(pending)
    if missing_:
        waiting["exposures"] = f"{len(missing_)} expected by {cand.expected_by}: " + \
            ", ".join(missing_[:10]) + (" ..." if len(missing_) > 10 else "")
    return waiting, missing_


def summary(state: Level3State, now: float, limit: int | None = None) -> dict[str, Any]:
    """What status shows of the candidates: the open ones and the abandoned
    ones, oldest first, and the expected exposures missing, longest first,
    each list the first ``limit`` (None: all) beside its count
    (``<list>_count``), and so each open candidate's own missing list.

    Built once a second for /planner and again for the gauges
    (doers/planner_status.py): only what is shown is built. A stuck program
    of 10,000 exposures made an entry of each missing exposure, and a copy
    of each candidate's list, every second, for the view to keep 100 of
    them (bench/README.md, session 46); the counts are set unions now."""
    candidates = state.candidates.values()
    open_ = [c for c in candidates if c.is_open and c.members]
    named = [c for c in open_ if c.missing]  # dict order: the order they name them in
    missing = _missing_listed(named, limit)
    by_program: dict[str, int] = {}
    every: set[str] = set()
    for c in named:  # an exposure is its first naming candidate's program's
        before = len(every)
        every.update(c.missing)
        if len(every) > before:
            by_program[c.key.program] = by_program.get(c.key.program, 0) + len(every) - before
    oldest = min((c.opened for c in named), default=None)
    abandoned = [c for c in candidates if c.abandoned is not None]
    return {
        "open": len(open_),
        "candidates": [{
            "candidate": c.label, "acid": c.key.acid, "asn_type": c.key.asn_type,
            "members": len(c.members), "expected_by": c.expected_by,
            "waiting_for": {**c.waiting_for, **({"error": c.fault} if c.fault else {})},
            "missing": c.missing[:limit], "versions": len(c.sent), "since": c.opened,
            "quiet_for": now - c.changed, "missing_count": len(c.missing),
        } for c in _oldest(open_, limit)],
        "missing": missing,
        "missing_by_program": by_program,
        "oldest_missing_age": (now - oldest) if oldest is not None else 0.0,
        "closed": sum(1 for c in candidates if c.sent and not c.is_open),
        # Closed with nothing to make: no order, shown apart from the open ones.
        "abandoned": [{
            "candidate": c.label, "acid": c.key.acid, "asn_type": c.key.asn_type,
            "members": len(c.members), "reason": c.abandoned, "since": c.opened,
            "quiet_for": now - c.changed,
        } for c in _oldest(abandoned, limit)],
        "candidates_count": len(open_), "abandoned_count": len(abandoned),
        "missing_count": len(every),
    }


def _oldest(cands: list[Candidate], limit: int | None) -> list[Candidate]:
    """The first ``limit`` by the time they opened (ties: in their order), not all sorted."""
    by_opened = attrgetter("opened")
    return sorted(cands, key=by_opened) if limit is None else \
        heapq.nsmallest(limit, cands, key=by_opened)


def _missing_listed(named: list[Candidate], limit: int | None) -> dict[str, dict[str, Any]]:
    """The ``limit`` expected exposures missing longest, each with its
    program and the (first ``limit``) open candidates naming it: as sorting
    every missing exposure by the time its oldest candidate opened would
    list them (ties: in the order the candidates, in turn, name them; a
    candidate names each exposure once), from the candidates' own lists."""
    shown = _longest_missing(named, limit)
    listed: dict[str, dict[str, Any]] = {e: {"program": None, "since": since, "candidates": []}
                                         for e, since in shown}
    wanted = set(listed)
    for c in named:
        for e in wanted.intersection(c.missing):
            entry = listed[e]
            if entry["program"] is None:
                entry["program"] = c.key.program
            if limit is None or len(entry["candidates"]) < limit:
                entry["candidates"].append(c.label)
    return listed


def _longest_missing(named: list[Candidate], limit: int | None) -> list[tuple[str, float]]:
    """(exposure, since) of ``_missing_listed``'s, in its order. An
    exposure's since is the opening of the oldest candidate naming it: the
    candidates taken by opening, a time's new names are all of that since.
    Those of the times wholly shown, and the first of the last time's, are
    then ordered by where the candidates first name them."""
    whole: dict[str, float] = {}  # the times wholly shown: exposure -> since
    last: set[str] = set()  # the last time's, of which ``room`` are shown
    last_since, room = 0.0, 0
    by_opened = sorted(named, key=attrgetter("opened"))
    i = 0
    while i < len(by_opened) and (limit is None or len(whole) < limit):
        opened, names = by_opened[i].opened, set()
        while i < len(by_opened) and by_opened[i].opened == opened:
            names.update(by_opened[i].missing)
            i += 1
        names.difference_update(whole)
        if limit is not None and len(whole) + len(names) > limit:
            last, last_since, room = names, opened, limit - len(whole)
            break
        whole.update(dict.fromkeys(names, opened))
    first: dict[str, int] = {}  # where they are first named, among the shown
    pending, taken = len(whole), 0
    for c in named:
        if not pending and taken == room:
            break
        if whole.keys().isdisjoint(c.missing) and last.isdisjoint(c.missing):
            continue
        for e in c.missing:
            if e in first:
                continue
            if e in whole:
                first[e] = len(first)
                pending -= 1
            elif e in last and taken < room:
                first[e] = len(first)
                taken += 1
            else:
                continue
            if not pending and taken == room:
                break
    since = {e: whole.get(e, last_since) for e in first}
    return sorted(since.items(), key=lambda es: (es[1], first[es[0]]))


# calstream_missing_exposures{program}: the program is a record's (a header,
# a plan), so its series are bounded: a forger's visits of many programs,
# each promising exposures that never come, were one series each, kept for
# the daemon's life. Real programs missing exposures at once are a handful.
MISSING_PROGRAM_SERIES = 50


def program_series(by_program: dict[str, int], limit: int = MISSING_PROGRAM_SERIES) -> dict[str, int]:
    """The gauge's values: the ``limit`` programs missing most (ties by
    program, for a stable set), the rest summed under ``other``."""
    ranked = sorted(by_program.items(), key=lambda pc: (-pc[1], pc[0]))
    series = dict(ranked[:limit])
    if rest := ranked[limit:]:
        series["other"] = sum(count for _, count in rest)
    return series
