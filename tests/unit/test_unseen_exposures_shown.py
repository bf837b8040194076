"""Holds and pointing updates of exposures the planner has no product event of.

A hold no product event backs (a forged held record taken back at a
restart) and a pointing update kept for an exposure not seen yet were named
in the planner's /planner view only: `calstream status` and the console
showed neither, and no metric counted the updates. Now both show them, and
the planner exports their counts (the lease holder's counting, as its other
gauges).
"""

from __future__ import annotations

import time

from calstream.daemon.operations import console_pages, status_render
from calstream.daemon.operations.status_summary import (
    BrokerView,
    Endpoint,
    Status,
    summarise_planner,
)

from .test_console import _snapshot
from .test_forged_held_record import FORGED, _restored_with_forged_hold
from .test_planner_state import T0, imaging, product, update

EARLY = "jw01234001001_02101_00009_nrcb1"
VIEW = {"caught_up": True, "namespaces": {}, "held_without_product": [FORGED],
        "held_without_product_count": 1,
        "pointing_updates_waiting": [f"jw01234001001_02101_{n:05d}_nrcb1" for n in range(100)],
        "pointing_updates_waiting_count": 130}


def _status(view) -> Status:
    return Status(time.time(), "p.", "p", [], {}, BrokerView("h:1"), {"view": view})


def test_status_names_holds_without_a_product_and_updates_waiting_for_their_exposure():
    text = status_render.printable(_status(VIEW))
    assert "held exposures no product event backs (only `calstream holds release" in text
    assert f"product event backs (only `calstream holds release EXPOSURE --reason ...` " \
           f"ends them): 1\n    {FORGED}\n" in text
    assert "pointing updates waiting for their exposure's detector1 product (applied when " \
           "it comes): 130\n" in text
    assert "jw01234001001_02101_00019_nrcb1" in text  # the first LISTED of them
    assert "jw01234001001_02101_00020_nrcb1" not in text
    assert "    ... and 110 more (the first 100 in /planner)\n" in text


def test_the_console_names_them_on_its_front_page():
    html = console_pages.index(_snapshot({}, _status(VIEW))).decode()
    assert "only `calstream holds release EXPOSURE --reason ...` ends them): 1" in html
    assert FORGED in html
    assert "(applied when it comes): 130" in html and "... and 30 more" in html


def test_a_view_of_other_shapes_shows_what_it_can():
    odd = {"caught_up": True, "namespaces": {}, "held_without_product": [FORGED, 3, None],
           "held_without_product_count": "many", "pointing_updates_waiting": "x"}
    text = status_render.printable(_status(odd))
    assert "ends them): 1\n" in text and "pointing updates waiting" not in text


def test_the_planner_counts_them_in_its_gauges(tmp_path):
    from calstream.daemon.doers import planner_status

    from .test_planner_record_runs import _planner

    planner, _ = _planner(tmp_path, "planner")
    planner.state.observe(product(imaging(1)), T0)
    planner.holds[FORGED] = _restored_with_forged_hold().holds[FORGED]
    planner.pointing_waiting.keep(update(EARLY, "correct"))
    planner_status.refresh(planner)
    registry = planner.metrics.registry
    assert registry.get_sample_value("calstream_held_without_product") == 1
    assert registry.get_sample_value("calstream_pointing_updates_waiting") == 1


def test_status_sums_them_from_the_lease_holder_only():
    def endpoint(leader: int, waiting: int, unbacked: int) -> Endpoint:
        return Endpoint("u", True, samples=[
            ("calstream_planner_leader", {"group": "g"}, leader),
            ("calstream_pointing_updates_waiting", {}, waiting),
            ("calstream_held_without_product", {}, unbacked)])

    # A standby keeps the values it set while it led: not counted again.
    planner = summarise_planner([endpoint(1, 2, 1), endpoint(0, 5, 1)])
    assert planner["pointing_updates_waiting"] == 2 and planner["held_without_product"] == 1
