"""The level-3 summary builds only what /planner shows (session 46).

/planner shows the first 100 of each level-3 list beside its count. The
summary built every list whole each second (an entry of each missing
exposure, a copy of each open candidate's missing list) and the view cut
them after: a stuck program of 10,000 exposures cost the planner's loop
that work each second, twice (the gauges too). Now the summary builds the
first ``limit`` of each list and counts the rest; the view is what it was,
byte for byte, checked here against the code before on states of a few
entries and of many, with ties (a plan's candidates open at one time and
name the same exposures).
"""

from __future__ import annotations

import heapq
import json
from types import SimpleNamespace

from calstream.daemon.deciders.level3_status import program_series
from calstream.daemon.doers import planner_status
from calstream.steps.plans import parse_manifest
from calstream.steps.synthetic.headers import exposure_id

from .test_level3_stage2_wait import WAIT
from .test_level3_stage2_wait import new_state as waiting_state
from .test_level3_state import QUIET, T0, dither, feed, new_state, rate


def _before(state, now: float) -> dict:
    """The level-3 summary as session 45 built it (level3_status.summary),
    and cut (planner_status._stage3_listed): the reference."""
    open_ = [c for c in state.candidates.values() if c.is_open and c.members]
    missing: dict = {}
    for c in open_:
        for m in c.missing:
            entry = missing.setdefault(m, {"program": c.key.program, "since": c.opened,
                                           "candidates": []})
            entry["since"] = min(entry["since"], c.opened)
            entry["candidates"].append(c.label)
    oldest = min((e["since"] for e in missing.values()), default=None)
    level3 = {
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
        "abandoned": [{
            "candidate": c.label, "acid": c.key.acid, "asn_type": c.key.asn_type,
            "members": len(c.members), "reason": c.abandoned, "since": c.opened,
            "quiet_for": now - c.changed,
        } for c in sorted(state.candidates.values(), key=lambda c: c.opened)
            if c.abandoned is not None],
    }
    limit, first, reasons = planner_status.VIEW_LIMIT, planner_status._first, \
        planner_status._reasons
    shown = heapq.nsmallest(limit, level3["missing"].items(), key=lambda kv: kv[1]["since"])
    return {**level3,
            **first([{**c, "waiting_for": reasons(c["waiting_for"]),
                      **first(c["missing"], "missing")}
                     for c in level3["candidates"][:limit]],
                    "candidates", len(level3["candidates"])),
            **first([{**c, "reason": reasons(c["reason"])}
                     for c in level3["abandoned"][:limit]],
                    "abandoned", len(level3["abandoned"])),
            **first({e: {**m, "candidates": m["candidates"][:limit]} for e, m in shown},
                    "missing", len(level3["missing"])),
            "missing_by_program": program_series(level3["missing_by_program"])}


def _planner(state, now: float) -> SimpleNamespace:
    return SimpleNamespace(clock=SimpleNamespace(now=lambda: now), caught_up=True,
                           restored_from=None, plans={}, states={"live": state}, holds={},
                           pointing_waiting=_NoUpdates())


class _NoUpdates:
    def exposures(self) -> list[str]:
        return []

    def __len__(self) -> int:
        return 0


def _few():
    """Two visits missing a few exposures each, two candidates abandoned."""
    state = waiting_state()
    for n in (1, 2):
        state.observe(rate(dither(n, nexp=2, OBSERVTN="009"), T0 + n), T0 + n)
    for visit in (1, 2):  # still in their quiet period: open
        feed(state, dither(1, nexp=4, OBSERVTN=f"{visit:03d}"), T0 + WAIT - 10 + visit)
    state.tick(T0 + 2 + WAIT)
    return state, T0 + 2 + WAIT


def _plan(observations: int, exposures: int, program: str = "01234") -> str:
    headers = [dither(n, nexp=exposures, OBSERVTN=f"{o:03d}", PROGRAM=program)
               for o in range(1, observations + 1) for n in range(1, exposures + 1)]
    return json.dumps({"exposures": [
        {"exposure_id": exposure_id(h), "candidates": [f"o{h['OBSERVTN']}", "c1000"],
         "header": {k: h[k] for k in ("INSTRUME", "EXP_TYPE", "FILTER", "PUPIL", "SUBARRAY",
                                      "TARGETID", "NEXPOSUR")}} for h in headers]})


def _many():
    """Stuck visits opened one after another (headers), and plans whose
    candidates open at one time and name the same exposures (o001..o003
    and c1000 each): ties at the view's cut."""
    state = new_state()
    state.load_plan(parse_manifest(_plan(3, 80), source="a.json"), T0)
    for visit in range(1, 131):
        feed(state, dither(1, nexp=300, OBSERVTN=f"{visit + 10:03d}"), T0 + visit)
    state.load_plan(parse_manifest(_plan(2, 70, program="04567"), source="b.json"), T0 + 5)
    feed(state, dither(1, nexp=80, OBSERVTN="002"), T0 + 200)  # one of the plan's came
    return state, T0 + 10 * QUIET


def test_the_view_is_what_it_was_with_few_entries_and_with_many():
    for make in (_few, _many):
        state, now = make()
        before = _before(state.stage3, now)
        view = planner_status.view(_planner(state, now))["namespaces"]["live"]["stage3"]
        assert json.dumps(view) == json.dumps(before), make.__name__
        assert view["missing_count"] > 0 and (make is _many) == (view["missing_count"] > 100)
        assert (make is _few) == bool(view["abandoned"])


def test_the_summary_builds_only_the_first_of_each_list_and_counts_them_all():
    state, now = _many()
    level3 = state.summary(now, limit=100)["level3"]
    before = _before(state.stage3, now)
    assert level3["missing_count"] == before["missing_count"] > 30_000
    assert len(level3["missing"]) == 100 and len(level3["candidates"]) == 100
    assert all(len(c["missing"]) <= 100 for c in level3["candidates"])
    assert level3["candidates_count"] == level3["open"] == before["open"]
    # The gauges' summary: the counts, no list.
    counts = state.summary(now, limit=0)["level3"]
    assert (counts["missing"], counts["candidates"], counts["abandoned"]) == ({}, [], [])
    assert program_series(counts["missing_by_program"]) == before["missing_by_program"]
    assert counts["oldest_missing_age"] == before["oldest_missing_age"]
    # All of them, as tests and readers of the whole state ask.
    whole = state.summary(now)["level3"]
    assert len(whole["missing"]) == whole["missing_count"] == before["missing_count"]


def _stand_ins(rng) -> SimpleNamespace:
    """Open candidates in an order that is not their opening's, opened at
    few times (ties), naming shared exposures each in its own order."""
    names = [f"jw0{p}001001_02101_{n:05d}_nrcb1" for p in ("1234", "4567") for n in range(90)]
    cands = {}
    for i in range(rng.randint(1, 7)):
        program = rng.choice(("01234", "04567"))
        missing = rng.sample(names, rng.randint(0, len(names)))
        cands[i] = SimpleNamespace(
            is_open=True, members={"m"}, missing=missing, opened=float(rng.randint(0, 2)),
            changed=0.0, key=SimpleNamespace(program=program, acid=f"o{i:03d}", asn_type="image3"),
            label=f"c{i}", expected_by="headers", waiting_for={"exposures": "x"}, fault=None,
            sent=[], abandoned=None)
    return SimpleNamespace(candidates=cands)


def test_the_missing_listed_are_those_sorting_them_all_would_list():
    """Ties at the cut, candidates in an order that is not their opening's,
    exposures named by several: the oldest 100 as the code before chose
    them, in its order, each with its program and candidates."""
    import random

    from calstream.daemon.deciders.level3_status import summary

    rng = random.Random(46)
    for _ in range(200):
        state = _stand_ins(rng)
        before = _before(state, 10.0)
        now = planner_status._stage3_listed(summary(state, 10.0, planner_status.VIEW_LIMIT))
        assert json.dumps(now) == json.dumps(before)
        whole = summary(state, 10.0)
        assert whole["missing_count"] == before["missing_count"] == len(whole["missing"])
