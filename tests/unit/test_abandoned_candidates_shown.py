"""An abandoned stage-3 candidate (no member has a stage-2 product when its
wait ends) as `calstream status` and the console show it: as abandoned,
with its reason, not as open."""

from __future__ import annotations

from .test_level3_stage2_wait import T0, WAIT, dither, new_state, rate


def _abandoned_view(now: float) -> dict:
    state = new_state()
    for n in (1, 2):
        state.observe(rate(dither(n, nexp=2), T0 + n), T0 + n)
    state.tick(T0 + 2 + WAIT)
    summary = state.summary(now)
    return {"caught_up": True, "namespaces": {"live": {
        "stage2_waiting": summary["waiting_for"], "stage3": summary["level3"]}}}


def test_status_and_console_show_an_abandoned_candidate_as_such():
    from calstream.daemon.operations import console_pages
    from calstream.daemon.operations.console_data import Snapshot, index_broker
    from calstream.daemon.operations.status_render import render
    from calstream.daemon.operations.status_summary import (
        BrokerView,
        Endpoint,
        Status,
        summarise_parked,
        summarise_planner,
    )

    view = _abandoned_view(T0 + 2 + WAIT)
    daemon = Endpoint("http://127.0.0.1:9310", reachable=True, ready=True, problems=[],
                      samples=[], planner=view)
    lines = render(Status(0.0, "calstream.", "calstream", [daemon], {},
                          BrokerView("127.0.0.1:9092"), summarise_planner([daemon]),
                          summarise_parked([daemon]))).splitlines()
    at = next(i for i, line in enumerate(lines) if "stage-3 candidates abandoned: 1" in line)
    assert "no member has a stage-2 product" in lines[at + 1]
    assert not any("stage-3 candidates open" in line for line in lines)

    index: dict = {}
    status = Status(T0, "p.", "p", [], {}, BrokerView("h:1"), {"view": view})
    index_broker(status, "live", index)
    obs = index[("01234", "001")]
    snapshot = Snapshot(T0, "live", index, status, ["live"], "live", [], [], None)
    html = console_pages.observation_page(snapshot, obs, {}).decode()
    assert "(abandoned, 2 member(s))" in html and "no member has a stage-2 product" in html
