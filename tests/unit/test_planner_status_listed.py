"""The stage-2 and hold parts of the planner's status build only what is
shown (session 46).

/planner shows the first 100 waiting stage-2 associations by name, the
holds' count and oldest age, and the first 100 holds no product backs,
each beside its count; the gauges only counts. The summary built a dict
of every waiting association's reasons, twice a second (the gauges never
read it, the view cut it to 100), parsed every hold's time anew, and the
view sorted every unbacked hold to keep 100. The view is what it was, byte
for byte, checked here against the code before on a few entries and on
many (the candidates' own order not their names', so the cut is by name).
"""

from __future__ import annotations

import heapq
import json
from types import SimpleNamespace

from calstream.daemon.deciders import direct_image_holds
from calstream.daemon.doers import planner_status
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.routing_terms import DIRECT_IMAGE
from calstream.topics import contract

from .test_level3_state import T0, dither, new_state, rate


def _before(planner, now: float) -> dict:
    """The stage-2 and hold parts of the view as session 46's h59 built
    them (PlannerState.summary, planner_status.view): the reference."""
    out = {}
    for namespace, state in planner.states.items():
        waiting = state.open_candidates.waiting()
        waiting_for = {c.science: dict(c.waiting_for) for c in waiting}
        held = [h for h in state.holds.values() if h["state"] == "held"
                and not direct_image_holds.is_direct_image_hold(h)]
        oldest = min((contract.parse_time(h["since"]).timestamp() for h in held), default=None)
        out[namespace] = {
            "stage2_waiting": {science: planner_status._reasons(why) for science, why in
                               heapq.nsmallest(100, waiting_for.items(), key=lambda kv: kv[0])},
            "stage2_waiting_count": len(waiting_for), "held": len(held),
            "oldest_hold_age": (now - oldest) if oldest is not None else 0.0}
    unbacked = [e for e, h in planner.holds.items() if h.get("state") == "held"
                and not any(e in s.exposures for s in planner.states.values())]
    return {"namespaces": out, "held_without_product": sorted(unbacked)[:100],
            "held_without_product_count": len(unbacked)}


def _shown(view: dict) -> dict:
    keys = ("stage2_waiting", "stage2_waiting_count", "held", "oldest_hold_age")
    return {"namespaces": {n: {k: ns[k] for k in keys} for n, ns in view["namespaces"].items()},
            "held_without_product": view["held_without_product"],
            "held_without_product_count": view["held_without_product_count"]}


class _NoUpdates:
    def exposures(self) -> list[str]:
        return []

    def __len__(self) -> int:
        return 0


def _planner(state, now: float) -> SimpleNamespace:
    return SimpleNamespace(clock=SimpleNamespace(now=lambda: now), caught_up=True,
                           restored_from=None, plans={}, states={"live": state},
                           holds=state.holds, pointing_waiting=_NoUpdates(), metrics=Metrics(),
                           programs_missing=set(), state=state)


def _stuck(held: int, unbacked: int):
    """``held`` exposures with PLANNED pointing (each held, its stage-2
    association waiting for the correction), arriving in the reverse of
    their names' order; ``unbacked`` holds taken back without a product
    (some for a direct image, some released), their times in two
    spellings, some alike."""
    state = new_state()
    for n in range(held, 0, -1):
        header = dither(1 + n % 50, nexp=50, OBSERVTN=f"{1 + n // 50:03d}", ENGQLPTG="PLANNED")
        at = T0 + held - n
        state.observe(rate(header, at), at)
    for n in range(unbacked):
        since = contract.iso(T0 - n % 7) if n % 2 else f"2027-01-15T07:59:5{n % 10}+00:00"
        state.restore_hold(contract.Message("hold", {
            "exposure_id": f"jw09999001001_02101_{n:05d}_nrcb1",
            "state": "released" if n % 11 == 0 else "held",
            "since": since, **({"waiting_for": DIRECT_IMAGE} if n % 5 == 0 else {})}))
    return state, T0 + held + 3600


def test_the_view_is_what_it_was_with_few_entries_and_with_many():
    for held, unbacked in ((3, 2), (260, 230)):
        state, now = _stuck(held, unbacked)
        planner = _planner(state, now)
        view = planner_status.view(planner)
        assert json.dumps(_shown(view)) == json.dumps(_before(planner, now)), held
        counts = _before(planner, now)
        assert (held > 100) == (counts["namespaces"]["live"]["stage2_waiting_count"] > 100)
        assert (unbacked > 100) == (counts["held_without_product_count"] > 100)


def test_the_summary_builds_only_what_is_shown():
    state, now = _stuck(260, 0)
    listed = state.summary(now, limit=100)
    assert listed["waiting"] == 260 and list(listed["waiting_for"]) == sorted(
        c.science for c in state.open_candidates.waiting())[:100]
    counts = state.summary(now, limit=0)  # the gauges': counts, no list
    assert (counts["waiting"], counts["waiting_for"], counts["held"]) == (260, {}, 260)
    whole = state.summary(now)  # all of it, in the candidates' own order
    assert list(whole["waiting_for"]) == [c.science for c in state.open_candidates.waiting()]


def test_the_gauges_count_them_all():
    state, now = _stuck(130, 120)
    planner = _planner(state, now)
    planner_status._set_gauges(planner)
    before = _before(planner, now)
    metrics = planner.metrics
    assert metrics.held_without_product._value.get() == before["held_without_product_count"]
    assert metrics.held_exposures._value.get() == before["namespaces"]["live"]["held"]
    assert metrics.held_for_direct_image._value.get() == sum(
        1 for n in range(120) if n % 5 == 0 and n % 11)
    assert metrics.oldest_hold_age._value.get() == before["namespaces"]["live"]["oldest_hold_age"]
    assert metrics.associations_open.labels(stage="stage2")._value.get() == 130
