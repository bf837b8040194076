"""/planner's lists are cut to their first 100, each beside its count.

A program of many exposures with stuck visits named every missing exposure
in the view's "missing", again in each open candidate's own list, and every
open and abandoned candidate: /planner grew without bound, past what
`calstream status` reads of an answer (64 MiB), and status then said no
daemon serves /planner. Now each list is cut, its count says how many in
all, and status and the console say how many were left out.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from calstream.daemon.doers import planner_status
from calstream.daemon.doers.planner_clock import PlannerClock
from calstream.daemon.operations import console_pages, status_render
from calstream.daemon.operations.status_summary import BrokerView, Status

from .test_console import _snapshot
from .test_level3_state import T0, dither, feed, new_state

VISITS = 130  # each one observation's candidate, stuck: one exposure of NEXPOSE came
NEXPOSE = 300


def _stuck_program() -> SimpleNamespace:
    state = new_state()
    for visit in range(1, VISITS + 1):
        feed(state, dither(1, nexp=NEXPOSE, OBSERVTN=f"{visit:03d}"), T0 + visit)
    return SimpleNamespace(clock=PlannerClock(), caught_up=True, restored_from=None, plans={},
                           states={"live": state}, holds={}, pointing_waiting=_NoUpdates())


class _NoUpdates:
    def exposures(self) -> list[str]:
        return []

    def __len__(self) -> int:
        return 0


def test_the_view_lists_the_first_100_of_each_list_and_counts_them_all():
    view = planner_status.view(_stuck_program())
    stage3 = view["namespaces"]["live"]["stage3"]
    assert stage3["open"] == VISITS and stage3["candidates_count"] == VISITS
    assert len(stage3["candidates"]) == planner_status.VIEW_LIMIT
    assert stage3["missing_count"] == VISITS * (NEXPOSE - 1)
    assert len(stage3["missing"]) == planner_status.VIEW_LIMIT
    first = stage3["candidates"][0]
    assert len(first["missing"]) == planner_status.VIEW_LIMIT
    assert first["missing_count"] == NEXPOSE - 1
    # The oldest missing are those listed, as status lists them.
    since = [m["since"] for m in stage3["missing"].values()]
    assert max(since) <= T0 + 2
    assert len(json.dumps(view)) < 1_000_000  # 39,000 names twice over were 5 MB


def _status(view) -> Status:
    return Status(time.time(), "p.", "p", [], {}, BrokerView("h:1"), {"view": view})


def test_status_counts_what_the_view_left_out():
    text = status_render.printable(_status(planner_status.view(_stuck_program())))
    assert f"  missing exposures: {VISITS * (NEXPOSE - 1)}, the oldest for " in text
    assert f"    ... and {VISITS * (NEXPOSE - 1) - 20} more\n" in text
    assert f"  stage-3 candidates open: {VISITS}\n" in text
    assert f"    ... and {VISITS - 20} more\n" in text


def test_the_console_says_its_observations_show_only_those_listed():
    html = console_pages.index(_snapshot({}, _status(planner_status.view(
        _stuck_program())))).decode()
    assert (f"missing exposures: {VISITS * (NEXPOSE - 1)}; the planner lists the first 100, "
            "and only those are on the observations") in html
    assert f"open stage-3 candidates: {VISITS}; the planner lists the first 100" in html


def test_a_view_of_a_planner_of_before_is_counted_by_its_lists():
    view = {"caught_up": True, "namespaces": {"live": {"stage2_waiting": {}, "stage3": {
        "missing": {}, "abandoned": [{"candidate": f"c{n}", "members": 1, "reason": "r"}
                                     for n in range(25)], "candidates": []}}}}
    text = status_render.printable(_status(view))
    assert "  stage-3 candidates abandoned: 25 (no member" in text
    assert "    ... and 5 more\n" in text


def test_stage2_waits_are_listed_by_name_and_their_reasons_bounded():
    """What an association waits for names its members: a candidate of
    thousands waiting for stage 2 was one text of them all, in the view."""
    from calstream.topics.dead_letters import REASON_BUDGET

    waiting = {f"jw01234001001_02101_{n:05d}_nrcb1": {"stage2": "jw01234_x, " * 5000}
               for n in range(150, 0, -1)}
    listed = planner_status._stage2_listed(waiting)
    assert listed["stage2_waiting_count"] == 150
    assert list(listed["stage2_waiting"]) == sorted(waiting)[:planner_status.VIEW_LIMIT]
    assert all(len(why["stage2"]) <= REASON_BUDGET
               for why in listed["stage2_waiting"].values())
