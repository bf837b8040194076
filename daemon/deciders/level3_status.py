"""Level-3 candidates in words, for status and metrics (pure).

What a candidate waits for, which expected exposures never came, and the
summary ``calstream status`` shows. These read whole candidates and visits,
so deciders/level3_state.py calls them only when someone reads the result,
never at a decision (a decision uses the counts it keeps).
"""

from __future__ import annotations

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


def summary(state: Level3State, now: float) -> dict[str, Any]:
    open_ = [c for c in state.candidates.values() if c.is_open and c.members]
    missing: dict[str, dict[str, Any]] = {}
    for c in open_:
        for m in c.missing:
            entry = missing.setdefault(m, {"program": c.key.program, "since": c.opened,
                                           "candidates": []})
            entry["since"] = min(entry["since"], c.opened)
            entry["candidates"].append(c.label)
    oldest = min((e["since"] for e in missing.values()), default=None)
    return {
        "open": len(open_),
        "candidates": [{
            "candidate": c.label, "acid": c.key.acid, "asn_type": c.key.asn_type,
            "members": len(c.members), "expected_by": c.expected_by,
            "waiting_for": {**c.waiting_for, **({"error": c.fault} if c.fault else {})},
            "missing": list(c.missing),
            "versions": len(c.sent), "since": c.opened, "quiet_for": now - c.changed,
        } for c in sorted(open_, key=lambda c: c.opened)],
        "missing": missing,
        "missing_by_program": {p: sum(1 for e in missing.values() if e["program"] == p)
                               for p in {e["program"] for e in missing.values()}},
        "oldest_missing_age": (now - oldest) if oldest is not None else 0.0,
        "closed": sum(1 for c in state.candidates.values() if c.sent and not c.is_open),
        # Closed with nothing to make: no order, shown apart from the open ones.
        "abandoned": [{
            "candidate": c.label, "acid": c.key.acid, "asn_type": c.key.asn_type,
            "members": len(c.members), "reason": c.abandoned, "since": c.opened,
            "quiet_for": now - c.changed,
        } for c in sorted(state.candidates.values(), key=lambda c: c.opened)
            if c.abandoned is not None],
    }


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
