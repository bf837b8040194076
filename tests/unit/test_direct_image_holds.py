"""A WFSS grism whose direct image does not come is held, not sent degraded
(daemon/deciders/direct_image_holds.py): jwst's spec2 refuses a WFSS
association without the direct image's catalog and segmentation map."""

from __future__ import annotations

from calstream.daemon.deciders.planner_state import PlannerState
from calstream.steps.synthetic.headers import synthetic_header
from calstream.topics import contract

from .test_planner_state import T0, WAIT, kinds, product, stage3_product, update

DIRECT = synthetic_header("NIRCAM", "NRC_IMAGE", FILTER="F444W", PUPIL="CLEAR",
                          DETECTOR="NRCALONG", MODULE="A", EXPOSURE="00001")
DIRECT_NAME = "jw01234-o001_t001_nircam_f444w-clear"


def grism(**overrides) -> contract.Message:
    return product(synthetic_header("NIRCAM", "NRC_WFSS", **overrides))


def held_grism(state: PlannerState) -> tuple[contract.Message, contract.Message]:
    """A grism past companion_wait without its direct image: (its event, its hold)."""
    g = grism()
    assert state.observe(g, T0) == []
    assert state.tick(T0 + WAIT - 1) == []  # within companion_wait: it only waits
    [hold] = state.tick(T0 + WAIT + 1)
    assert (hold.topic, hold.key) == ("holds", g["exposure_id"])
    return g, hold.message


def test_a_grism_without_its_direct_image_is_held_once_with_a_reason():
    state = PlannerState(companion_wait=WAIT)
    g, hold = held_grism(state)
    contract.validate("hold", hold.body)
    assert (hold["state"], hold["waiting_for"], hold["release"]) == ("held", "direct_image", None)
    assert hold["digest"] == g["inputs"][0]["digest"]
    assert hold["since"] == contract.iso(T0 + WAIT + 1)
    assert "WFSS" in hold["reason"] and "catalog and segmentation map" in hold["reason"]
    # Held, not degraded: no order, now or later, and no second hold record.
    assert state.tick(T0 + 10 * WAIT) == []
    s = state.summary(T0 + 10 * WAIT)
    assert (s["held_for_direct_image"], s["held"], s["degraded"]) == (1, 0, 0)
    assert "direct_image" in s["waiting_for"][g["exposure_id"]]


def test_the_direct_image_releases_the_hold_and_the_grism_is_ordered_once():
    state = PlannerState(companion_wait=WAIT)
    g, hold = held_grism(state)
    emits = state.observe(stage3_product(DIRECT, DIRECT_NAME), T0 + 2 * WAIT)
    assert kinds(emits) == [("holds", g["exposure_id"]), ("work.stage2", g["exposure_id"])]
    release, order = (e.message for e in emits)
    contract.validate("hold", release.body)
    assert (release["state"], release["release"], release["waiting_for"]) == (
        "released", None, "direct_image")
    assert release["direct_image"].endswith(f"{DIRECT_NAME}_i2d.fits")
    assert release.event_id != hold.event_id and "Released" in release["reason"]
    assert order["degraded"] is None
    assert state.summary(T0 + 2 * WAIT)["held_for_direct_image"] == 0
    assert state.tick(T0 + 3 * WAIT) == []


def test_a_restarted_planner_releases_a_hold_it_read_back():
    first = PlannerState(companion_wait=WAIT)
    g, hold = held_grism(first)
    state = PlannerState(companion_wait=WAIT)
    state.restore_hold(hold)
    assert state.observe(g, T0) == []
    assert state.tick(T0 + WAIT + 5) == []  # already held: nothing new
    emits = state.observe(stage3_product(DIRECT, DIRECT_NAME), T0 + 2 * WAIT)
    assert [e.message.type for e in emits] == ["hold", "work_order"]


def test_a_replayed_grism_waits_without_a_hold_record_or_a_degraded_order():
    state = PlannerState(companion_wait=WAIT, namespace="rerun")
    assert state.observe(grism(), T0) == []
    assert state.tick(T0 + 10 * WAIT) == []
    emits = state.observe(stage3_product(DIRECT, DIRECT_NAME), T0 + 11 * WAIT)
    assert [e.topic for e in emits] == ["work.stage2"]


def test_a_provisional_redelivery_gets_its_pointing_hold_over_the_direct_image_hold():
    state = PlannerState(companion_wait=WAIT)
    g, hold = held_grism(state)
    planned = grism(ENGQLPTG="PLANNED")
    [pointing] = state.observe(planned, T0 + 2 * WAIT)
    assert pointing.topic == "holds" and "waiting_for" not in pointing.message.body
    assert pointing.message["state"] == "held" and "ENGQLPTG" in pointing.message["reason"]
    s = state.summary(T0 + 2 * WAIT)
    assert (s["held"], s["held_for_direct_image"]) == (1, 0)


def test_a_corrected_grism_keeps_its_pointing_release_through_the_hold_and_a_restart():
    state = PlannerState(companion_wait=WAIT)
    planned = grism(ENGQLPTG="PLANNED")
    [pointing_hold] = state.observe(planned, T0)
    assert pointing_hold.message["state"] == "held"
    [released] = state.observe_pointing(update(planned["exposure_id"]), T0 + 5)
    assert released.message["release"]["path"] == "pointing"
    [hold] = state.tick(T0 + WAIT + 1)  # still no direct image: held for it instead
    assert hold.message["waiting_for"] == "direct_image"
    assert hold.message["pointing_release"] == released.message["release"]
    # A restarted planner reads that record back: the correction still holds,
    # nothing is held for pointing again, and the update is not judged twice.
    restarted = PlannerState(companion_wait=WAIT)
    restarted.restore_hold(hold.message)
    assert restarted.observe(planned, T0) == []
    assert restarted.observe_pointing(update(planned["exposure_id"]), T0 + 6) == []
    emits = restarted.observe(stage3_product(DIRECT, DIRECT_NAME), T0 + 2 * WAIT)
    assert [e.message.type for e in emits] == ["hold", "work_order"]
    order = emits[1].message
    assert order["releases"][planned["exposure_id"]]["path"] == "pointing"
    assert emits[0].message["pointing_release"] == released.message["release"]
