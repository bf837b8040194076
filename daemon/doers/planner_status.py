"""What the planner shows of itself: its gauges and the /planner view.

Both are made in the planner's own task, once a second once caught up
(doers/planner_loop.py), from the states' summaries (deciders/planner_state.py);
the HTTP thread only serves the last view built. Its lag (the records it has
yet to decide) is measured once a second while it catches up too. A summary
or a measure that raises is counted and logged once (``Faults``), never worth
the planner: the gauges keep their last values and /planner its last view.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from calstream.daemon.deciders.level3_status import MISSING_PROGRAM_SERIES, program_series
from calstream.topics.dead_letters import REASON_BUDGET, bounded

if TYPE_CHECKING:
    from calstream.daemon.doers.planner_loop import Planner

VIEW_LIMIT = 100  # entries of a list of the view; its count says how many in all


def refresh(planner: Planner) -> None:
    """The gauges set and the view built anew."""
    try:
        _set_gauges(planner)
    except Exception as exc:  # noqa: BLE001 - a status is never worth the planner
        planner.faults.survived("status", exc)
    planner.last_view = view_or_last(planner)


def view_or_last(planner: Planner) -> dict | None:
    """The view, or the last one that could be built if this one cannot."""
    try:
        return view(planner)
    except Exception as exc:  # noqa: BLE001 - as above
        planner.faults.survived("status", exc)
        return planner.last_view


def _set_gauges(planner: Planner) -> None:
    metrics = planner.metrics
    s = planner.state.summary(planner.clock.now(), limit=0)  # the counts, no list
    metrics.associations_open.labels(stage="stage2").set(s["waiting"])
    metrics.associations_open.labels(stage="stage3").set(s["level3"]["open"])
    metrics.associations_abandoned.labels(stage="stage3").set(s["level3"]["abandoned_count"])
    metrics.held_exposures.set(s["held"])
    metrics.held_for_direct_image.set(s["held_for_direct_image"])
    metrics.oldest_hold_age.set(s["oldest_hold_age"])
    series = program_series(s["level3"]["missing_by_program"])
    # A program no longer missing anything goes to 0, not left at its last
    # count, while the series stay within their bound (level3_status says
    # why there is one); beyond it, its series is removed.
    gone = sorted(planner.programs_missing - set(series))
    room = MISSING_PROGRAM_SERIES + 1 - len(series)
    for program in gone[max(room, 0):]:
        metrics.missing_exposures.remove(program)
    for program in gone[:max(room, 0)]:
        metrics.missing_exposures.labels(program=program).set(0)
    for program, count in series.items():
        metrics.missing_exposures.labels(program=program).set(count)
    planner.programs_missing = set(series) | set(gone[:max(room, 0)])
    metrics.oldest_missing_age.set(s["level3"]["oldest_missing_age"])
    metrics.held_without_product.set(_unbacked(planner, limit=0)[1])
    metrics.pointing_updates_waiting.set(len(planner.pointing_waiting))
    if s["hold_times_unreadable"]:  # the gauges are set all the same
        planner.faults.survived("status", ValueError(
            f"hold(s) whose since cannot be read, left out of the oldest hold's age "
            f"(first: {str(s['hold_times_unreadable'][0])[:200]})"))


async def measure_lag(planner: Planner, reader: Any, topics: list[str]) -> None:
    """How many records of its topics the planner has yet to decide, as of
    the last fetch responses (``calstream_planner_lag_records``, and
    "behind" in /planner): a planner that cannot keep up with the product
    events shows a lag that grows, where the stages show nothing but idle
    workers."""
    try:
        planner.behind = await reader.behind(set(topics))
    except Exception as exc:  # noqa: BLE001 - a status is never worth the planner
        planner.faults.survived("lag", exc)
        return
    for topic, left in planner.behind.items():
        planner.metrics.planner_lag.labels(topic=topic).set(left)


def view(planner: Planner) -> dict:
    """What the planner waits for, for `calstream status` (/planner)."""
    now = planner.clock.now()  # the waits' time: ages as the deciders count them
    out = {"caught_up": planner.caught_up, "restored_from": planner.restored_from, "plans": [
        {"plan_id": p.plan_id, "source": p.source, "exposures": len(p.exposures),
         "programs": list(p.programs)} for p in planner.plans.values()], "namespaces": {}}
    for namespace, state in planner.states.items():
        s = state.summary(now, limit=VIEW_LIMIT)
        out["namespaces"][namespace] = {
            **_stage2_listed(s["waiting_for"], s["waiting"]), "held": s["held"],
            "oldest_hold_age": s["oldest_hold_age"], "stage3": _stage3_listed(s["level3"])}
    out["held_without_product"], out["held_without_product_count"] = _unbacked(planner)
    # Pointing updates that came before their exposure (deciders/holds.py WaitingUpdates).
    out["pointing_updates_waiting"] = planner.pointing_waiting.exposures()[:VIEW_LIMIT]
    out["pointing_updates_waiting_count"] = len(planner.pointing_waiting)
    return out


def _unbacked(planner: Planner, limit: int = VIEW_LIMIT) -> tuple[list[str], int]:
    """Holds no product event backs (a forged record taken back at a restart,
    or one whose events are gone): only `holds release` ends them. The first
    ``limit`` by name, without sorting them all, and how many in all."""
    holds = planner.holds
    unseen = set(holds)
    for state in planner.states.values():  # a dict: C looks each up, no Python per hold
        unseen = unseen.difference(state.exposures)
    unbacked = [e for e in unseen if holds[e].get("state") == "held"]
    return heapq.nsmallest(limit, unbacked), len(unbacked)


def _stage2_listed(waiting: dict, count: int | None = None) -> dict:
    """The stage-2 associations waiting, the first VIEW_LIMIT by name (as
    status lists them; the summary lists no more, deciders/planner_summary.py),
    beside their count; what each waits for bounded."""
    return _first({science: _reasons(why) for science, why in heapq.nsmallest(
        VIEW_LIMIT, waiting.items(), key=lambda kv: kv[0])}, "stage2_waiting",
        len(waiting) if count is None else count)


def _stage3_listed(level3: dict) -> dict:
    """The level-3 summary, its lists built only up to VIEW_LIMIT (the
    oldest first, as status lists them) beside their counts
    (level3_status.summary), and what a candidate waits for bounded as a
    reason: a program of 10,000 exposures with a stuck visit named every
    missing exposure once in "missing" and again in each open candidate's
    own list (and in a candidate's waits, every member), and /planner grew
    past what `calstream status` reads of an answer (64 MiB): status then
    said no daemon serves /planner at all."""
    return {**level3,
            "candidates": [{**c, "waiting_for": _reasons(c["waiting_for"])}
                           for c in level3["candidates"]],
            "abandoned": [{**c, "reason": _reasons(c["reason"])} for c in level3["abandoned"]],
            # By program, as the gauge has them (a forger's visits are of
            # any number of programs); no reader of the view uses more.
            "missing_by_program": program_series(level3["missing_by_program"])}


def _first(items: list | dict, key: str, count: int | None = None) -> dict:
    """``{key: the first VIEW_LIMIT of items, key_count: how many in all}``."""
    listed = dict(list(items.items())[:VIEW_LIMIT]) if isinstance(items, dict) \
        else items[:VIEW_LIMIT]
    return {key: listed, f"{key}_count": len(items) if count is None else count}


def _reasons(why: Any) -> Any:
    """A reason, or each of a dict of them, bounded as a dead letter's reason."""
    if isinstance(why, dict):
        return {k: _reasons(v) for k, v in why.items()}
    return bounded(why, REASON_BUDGET) if isinstance(why, str) else why

