"""The planner's decisions, from product events alone (no broker)."""

from __future__ import annotations

import hashlib
import json

import pytest

from calstream.daemon.deciders.planner_state import PlannerState, observe_pointing_everywhere
from calstream.steps.associations import validate_level2
from calstream.steps.synthetic.headers import exposure_id, synthetic_header
from calstream.topics import contract

T0 = 1_800_000_000.0
WAIT = 600.0


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def product(header: dict, *, at: float = T0, variant: str = "") -> contract.Message:
    """A detector1 product event for ``header``, as a worker would publish it."""
    eid = exposure_id(header)
    quality = header["ENGQLPTG"]
    outputs = [{"path": f"/products/{header['PROGRAM']}/{header['OBSERVTN']}/{eid}_{s}.fits",
                "digest": digest(f"{eid}{s}{quality}{variant}"), "size": 10, "suffix": s}
               for s in ("rate", "rateints")]
    raw = digest(f"{eid}-uncal-{quality}{variant}")
    wid = hashlib.sha256(raw.encode()).hexdigest()
    return contract.build(
        "product", contract.event_id("product", wid, "success"), work_id=wid, stage="detector1",
        pipeline="calwebb_detector1", outcome="success", program=header["PROGRAM"],
        observation=header["OBSERVTN"], exposure_id=eid, product_name=eid, header=header,
        inputs=[{"path": f"/inbox/{eid}_uncal.fits", "digest": raw}], outputs=outputs,
        jwst_version="3.0.0", crds_context="jwst_0001.pmap", pointing_quality=quality,
        pointing_provisional=quality == "PLANNED", arrived_at=contract.iso(at - 5),
        emitted_at=contract.iso(at))


def kinds(emits):
    return [(e.topic, e.key) for e in emits]


def imaging(n: int, **overrides) -> dict:
    return synthetic_header("NIRCAM", "NRC_IMAGE", EXPOSURE=f"{n:05d}", NEXPOSUR=4, **overrides)


def test_imaging_science_is_ordered_at_once_with_a_valid_association():
    state = PlannerState(companion_wait=WAIT)
    event = product(imaging(1))
    emits = state.observe(event, T0)
    assert kinds(emits) == [("work.stage2", event["exposure_id"])]
    order = emits[0].message
    assert order["pipeline"] == "calwebb_image2" and order["degraded"] is None
    validate_level2(order["association"])
    members = order["association"]["products"][0]["members"]
    assert [(m["exptype"], m["expname"]) for m in members] == \
        [("science", event["outputs"][0]["path"])]
    assert order["inputs"] == [{**{k: event["outputs"][0][k] for k in ("path", "digest", "size")},
                                "role": "science"}]
    assert order["association_path"].endswith("_asn.json")


def test_the_same_event_twice_and_a_restart_order_nothing_twice():
    state = PlannerState(companion_wait=WAIT)
    event = product(imaging(1))
    first = state.observe(event, T0)
    assert len(first) == 1
    redelivered = contract.Message("product", {**event.body, "emitted_at": contract.iso(T0 + 9)})
    assert state.observe(redelivered, T0 + 10) == []
    restarted = PlannerState(companion_wait=WAIT)
    restarted.restore_order(first[0].message)
    assert restarted.observe(event, T0 + 20) == []
    assert restarted.tick(T0 + 10 * WAIT) == []


def test_planned_pointing_is_held_and_released_only_by_a_corrected_redelivery():
    state = PlannerState(companion_wait=WAIT)
    planned = product(imaging(3, ENGQLPTG="PLANNED"))
    emits = state.observe(planned, T0)
    assert kinds(emits) == [("holds", planned["exposure_id"])]
    hold = emits[0].message
    assert hold["state"] == "held" and "PLANNED" in hold["reason"]
    assert state.tick(T0 + 10 * WAIT) == [], "a hold never times out into stage 2"
    assert state.summary(T0 + 100)["held"] == 1
    corrected = product(imaging(3, ENGQLPTG="CALCULATED_TRACK_TR_202111"), at=T0 + 50)
    emits = state.observe(corrected, T0 + 50)
    assert kinds(emits) == [("holds", planned["exposure_id"]),
                            ("work.stage2", planned["exposure_id"])]
    assert emits[0].message["state"] == "released"
    assert emits[0].message["release"]["path"] == "redelivery"
    planned_rates = {o["digest"] for o in planned["outputs"]}
    assert not planned_rates & {i["digest"] for i in emits[1].message["inputs"]}
    restarted = PlannerState(companion_wait=WAIT)
    restarted.restore_hold(hold)
    restarted.observe(planned, T0 + 60)
    assert restarted.summary(T0 + 60)["held"] == 1


def nod(position: int, **overrides) -> dict:
    return synthetic_header("NIRSPEC", "NRS_FIXEDSLIT", "nod", EXPOSURE=f"{position:05d}",
                            PATT_NUM=position, **overrides)


def test_nods_wait_for_each_other_then_go_degraded_then_complete():
    state = PlannerState(companion_wait=WAIT)
    first = product(nod(1))
    assert state.observe(first, T0) == []
    waiting = state.summary(T0)["waiting_for"][first["exposure_id"]]
    assert "nod" in waiting
    assert state.tick(T0 + WAIT / 2) == []
    degraded = state.tick(T0 + WAIT + 1)
    assert kinds(degraded) == [("work.stage2", first["exposure_id"])]
    assert degraded[0].message["degraded"].startswith("Degraded")
    validate_level2(degraded[0].message["association"])
    # The others arrive late: a complete association replaces the degraded one.
    emits = state.observe(product(nod(2), at=T0 + WAIT + 5), T0 + WAIT + 5)
    emits += state.observe(product(nod(3), at=T0 + WAIT + 6), T0 + WAIT + 6)
    orders = {e.key: e.message for e in emits if e.topic == "work.stage2"}
    full = orders[first["exposure_id"]]
    assert full["degraded"] is None and full["work_id"] != degraded[0].message["work_id"]
    roles = sorted(m["exptype"] for m in full["association"]["products"][0]["members"])
    assert roles == ["background", "background", "science"]
    assert state.summary(T0 + WAIT + 7)["degraded"] == 0


def lrs_tso(activity: str, exp_type: str, **overrides) -> dict:
    return synthetic_header("MIRI", exp_type, ACT_ID=activity, NEXPOSUR=3, **overrides)


def test_segments_do_not_count_as_the_exposures_nexposur_promises():
    # A MIRI LRS time series: TA, TA confirmation and one science exposure in
    # three segments (NEXPOSUR=3 counts exposures, not files). With the TA and
    # two segments in, the confirmation is still to come: the spec2 of the
    # segments waits for it (jwst's Asn_MIRLRSTAConfirm takes it), neither
    # ordered without it as if the visit were complete nor degraded.
    state = PlannerState(companion_wait=WAIT)
    segments = [lrs_tso("03", "MIR_LRS-SLITLESS", EXSEGNUM=i, EXSEGTOT=3) for i in (1, 2, 3)]
    emits = []
    for header in (lrs_tso("01", "MIR_TACQ", SUBARRAY="SLITLESSPRISM"), *segments[:2]):
        emits += state.observe(product(header), T0)
    assert [k for k in kinds(emits) if "seg" in k[1]] == []
    waiting = state.summary(T0)["waiting_for"]
    assert all("target_acquisition" in waiting[exposure_id(h)] for h in segments[:2])
    # The confirmation arrives: each segment's association takes it.
    emits = state.observe(product(lrs_tso("02", "MIR_TACONFIRM")), T0 + 1)
    emits += state.observe(product(segments[2]), T0 + 2)
    orders = {e.key: e.message for e in emits if e.topic == "work.stage2" and "seg" in e.key}
    assert sorted(orders) == sorted(exposure_id(h) for h in segments)
    for order in orders.values():
        members = order["association"]["products"][0]["members"]
        assert sorted(m["exptype"] for m in members) == ["science", "target_acquisition"]
        assert order["degraded"] is None


def test_an_ifu_science_takes_its_backgrounds_leakcals_too():
    # jwst's spec2 subtracts a lone imprint member from every science and
    # background member (imprint_step: "a single imprint image ... without
    # further checks"); given several it matches each by BKGDTARG. jwst's
    # Asn_Lv2Spec keeps the background's imprints (AsnMixin_Lv2Imprint.
    # prune_imprints prunes only those of the science's own background
    # status), so the dedicated background is cleaned with its own leakcal.
    state = PlannerState(companion_wait=WAIT)

    def ifu(observation, activity, **kw):
        return synthetic_header("NIRSPEC", "NRS_IFU", OBSERVTN=observation, ACT_ID=activity,
                                NEXPOSUR=2, **kw)

    background = ifu("002", "01", BKGDTARG=True, TARGETID=2)
    leakcals = [ifu("001", "02", IS_IMPRT=True),
                ifu("002", "02", IS_IMPRT=True, BKGDTARG=True, TARGETID=2)]
    science = ifu("001", "01")
    for header in (background, *leakcals):
        state.observe(product(header), T0)
    emits = state.observe(product(science), T0 + 1)
    [order] = [e.message for e in emits if e.key == exposure_id(science)]
    members = {(m["exptype"], m["expname"].rsplit("/", 1)[1].rsplit("_", 1)[0])
               for m in order["association"]["products"][0]["members"]}
    assert members == {("science", exposure_id(science)),
                       ("background", exposure_id(background)),
                       ("imprint", exposure_id(leakcals[0])),
                       ("imprint", exposure_id(leakcals[1]))}


def test_an_unroutable_exposure_is_dead_lettered_once():
    state = PlannerState(companion_wait=WAIT)
    header = imaging(1, EXP_TYPE="MIR_IMAGE")  # a MIRI type on a NIRCam detector
    event = product(header)
    emits = state.observe(event, T0)
    assert kinds(emits) == [("deadletter", event["exposure_id"])]
    assert "route" in emits[0].message["reason"]
    assert state.observe(event, T0 + 1) == []


@pytest.mark.parametrize("header", [imaging(2), nod(1)])
def test_work_orders_validate_against_the_published_schema(header):
    state = PlannerState(companion_wait=WAIT)
    emits = state.observe(product(header), T0) + state.tick(T0 + 2 * WAIT)
    order = next(e.message for e in emits if e.topic == "work.stage2")
    contract.decode(json.dumps(order.body).encode(), expected="work_order")


CORRECT = {"ENGQLPTG": "CALCULATED_TRACK_TR_202111", "RA_V1": 80.4, "DEC_V1": -69.4,
           "PA_V3": 110.0, "RA_REF": 80.5, "DEC_REF": -69.5, "ROLL_REF": 109.5}


@pytest.mark.parametrize("quality", ["planned", "Planned"])
def test_planned_in_other_case_is_held_and_correctable_as_the_gate_reads_it(quality):
    """The stage consumers' gate reads ENGQLPTG blanks and case aside
    (pointing_gate.is_planned); the planner held only the exact text, so it
    ordered stage 2 of such a file (a dead letter at the gate, every time)
    and refused its correction as "not held"."""
    state = PlannerState(companion_wait=WAIT)
    planned = product(imaging(3, ENGQLPTG=quality))
    assert kinds(state.observe(planned, T0)) == [("holds", planned["exposure_id"])]
    assert state.summary(T0 + 1)["held"] == 1
    emits = state.observe_pointing(update(planned["exposure_id"]), T0 + 5)
    assert kinds(emits) == [("holds", planned["exposure_id"]),
                            ("work.stage2", planned["exposure_id"])]
    order = emits[1].message
    assert set(order["releases"]) == {planned["exposure_id"]}
    assert order["parameters"]["pointing_corrections"]


def update(exposure: str, action: str = "correct", **fields) -> contract.Message:
    if action == "correct":
        fields.setdefault("keywords", CORRECT)
    else:
        fields.setdefault("reason", "telemetry lost for good; WCS checked by hand")
        fields.setdefault("by", "ops")
    return contract.build("pointing_update",
                          contract.event_id("pu", exposure, action, json.dumps(fields)),
                          exposure_id=exposure, action=action, **fields)


def held_state():
    state = PlannerState(companion_wait=WAIT)
    planned = product(imaging(3, ENGQLPTG="PLANNED"))
    state.observe(planned, T0)
    return state, planned


def test_a_pointing_update_releases_the_hold_and_corrects_the_stage2_input():
    state, planned = held_state()
    emits = state.observe_pointing(update(planned["exposure_id"]), T0 + 5)
    assert kinds(emits) == [("holds", planned["exposure_id"]),
                            ("work.stage2", planned["exposure_id"])]
    release = emits[0].message["release"]
    assert release["path"] == "pointing" and release["keywords"] == CORRECT
    order = emits[1].message
    rate = next(o for o in planned["outputs"] if o["suffix"] == "rate")
    fix = order["parameters"]["pointing_corrections"][rate["path"].rsplit("/", 1)[1]]
    assert fix["keywords"] == CORRECT and emits[0].message["release"]["update_event_id"] in fix["note"]
    assert order["pointing_quality"] == CORRECT["ENGQLPTG"] and not order["pointing_provisional"]
    # the same update read again after a restart changes nothing and is no error
    restarted = PlannerState(companion_wait=WAIT)
    restarted.restore_hold(emits[0].message)
    restarted.restore_order(order)
    restarted.observe(planned, T0 + 9)
    assert restarted.observe_pointing(update(planned["exposure_id"]), T0 + 10) == []


def test_an_update_read_again_after_a_snapshot_that_predates_it_releases_the_exposure():
    """A restart from a snapshot taken while the exposure was held, the
    update applied after it: the ledger's hold record (released by the
    update) is restored over the snapshot's, and the update is read again
    in the tail. "Already applied" answered nothing, so the restored
    exposure stayed held: no stage 2 after a restart that lost the order,
    its mosaic never closed."""
    state, planned = held_state()
    u = update(planned["exposure_id"])
    [released, order] = state.observe_pointing(u, T0 + 5)
    restarted = PlannerState(companion_wait=WAIT)
    restarted.observe(planned, T0)  # the snapshot's state: held, no release
    restarted.restore_hold(released.message)  # the ledger's own record wins
    emits = restarted.observe_pointing(u, T0 + 10)  # the tail
    assert kinds(emits) == [("work.stage2", planned["exposure_id"])]
    assert emits[0].message["work_id"] == order.message["work_id"]
    assert not restarted.exposures[planned["exposure_id"]].provisional
    assert restarted.summary(T0 + 11)["waiting"] == 0


def test_an_operator_release_keeps_planned_and_says_so():
    state, planned = held_state()
    emits = state.observe_pointing(update(planned["exposure_id"], "release"), T0 + 5)
    assert [e.topic for e in emits] == ["holds", "work.stage2"]
    assert emits[0].message["release"]["path"] == "operator"
    order = emits[1].message
    assert order["pointing_quality"] == "PLANNED" and order["pointing_provisional"] is True
    assert "released by operator" in order["parameters"]["annotation"]
    assert "ops" in order["parameters"]["annotation"]
    assert order["releases"][planned["exposure_id"]]["reason"].startswith("telemetry lost")


@pytest.mark.parametrize("make, words", [
    (lambda p: update("jw09999001001_02101_00001_nrcb1"), "unknown exposure"),
    (lambda p: update(p["exposure_id"], digest="sha256:" + "0" * 64), "content"),
])
def test_bad_pointing_updates_are_dead_lettered_and_release_nothing(make, words):
    state, planned = held_state()
    emits = state.observe_pointing(make(planned), T0 + 5)
    assert kinds(emits) == [("deadletter", emits[0].key)]
    assert emits[0].message["category"] == "rejected_update"
    assert words in emits[0].message["reason"]
    assert state.summary(T0 + 6)["held"] == 1


def test_an_update_for_an_exposure_that_is_not_held_is_rejected():
    state = PlannerState(companion_wait=WAIT)
    event = product(imaging(1))
    state.observe(event, T0)
    [e] = state.observe_pointing(update(event["exposure_id"]), T0 + 1)
    assert e.topic == "deadletter" and "not held" in e.message["reason"]


REPLAY = {"replay_id": "0123456789abcdef", "namespace": "ctx2",
          "crds_context": "jwst_0002.pmap"}


def replayed(event: contract.Message) -> contract.Message:
    """The same content's detector1 product in a reprocessing namespace."""
    body = {k: v for k, v in event.body.items()
            if k not in ("schema", "schema_version", "event_id")}
    body.update(namespace="ctx2", replay=REPLAY, crds_context=REPLAY["crds_context"])
    return contract.build("product", contract.event_id("product", event.event_id, "ctx2"),
                          **body)


def live_and_namespace():
    holds: dict = {}
    live = PlannerState(companion_wait=WAIT, holds=holds)
    ns = PlannerState(companion_wait=WAIT, holds=holds, namespace="ctx2")
    return live, ns


def test_a_correction_releases_a_held_exposure_in_every_namespace():
    live, ns = live_and_namespace()
    planned = product(imaging(3, ENGQLPTG="PLANNED"))
    assert kinds(live.observe(planned, T0)) == [("holds", planned["exposure_id"])]
    assert ns.observe(replayed(planned), T0 + 1) == []  # held there too, one hold record
    emits = observe_pointing_everywhere([live, ns], update(planned["exposure_id"]), T0 + 5)
    assert kinds(emits) == [("holds", planned["exposure_id"]),
                            ("work.stage2", planned["exposure_id"]),
                            ("work.stage2", planned["exposure_id"])]
    live_order, ns_order = emits[1].message, emits[2].message
    assert live_order.get("namespace", "live") == "live" and ns_order["namespace"] == "ctx2"
    assert ns_order["priority"] == "replay" and ns_order["crds_context"] == "jwst_0002.pmap"
    for order in (live_order, ns_order):
        assert order["pointing_quality"] == CORRECT["ENGQLPTG"]
    # read again after a restart: nothing twice, in either namespace
    holds = {planned["exposure_id"]: emits[0].message.body}
    live2 = PlannerState(companion_wait=WAIT, holds=holds)
    ns2 = PlannerState(companion_wait=WAIT, holds=holds, namespace="ctx2")
    live2.restore_order(live_order)
    ns2.restore_order(ns_order)
    assert live2.observe(planned, T0 + 9) == [] and ns2.observe(replayed(planned), T0 + 9) == []
    assert observe_pointing_everywhere([live2, ns2], update(planned["exposure_id"]), T0 + 10) \
        == []


def test_a_release_reaches_a_namespace_that_alone_holds_the_exposure():
    live, ns = live_and_namespace()
    planned = product(imaging(3, ENGQLPTG="PLANNED"))
    ns.observe(replayed(planned), T0)  # the live products are gone; only the replay has it
    emits = observe_pointing_everywhere([live, ns], update(planned["exposure_id"], "release"),
                                        T0 + 5)
    assert kinds(emits) == [("holds", planned["exposure_id"]),
                            ("work.stage2", planned["exposure_id"])]
    assert emits[1].message["namespace"] == "ctx2"
    assert emits[0].message["release"]["path"] == "operator"


def test_a_rejected_update_releases_nothing_anywhere():
    live, ns = live_and_namespace()
    planned = product(imaging(3, ENGQLPTG="PLANNED"))
    live.observe(planned, T0)
    ns.observe(replayed(planned), T0)
    bad = update(planned["exposure_id"], digest="sha256:" + "0" * 64)
    assert [e.topic for e in observe_pointing_everywhere([live, ns], bad, T0 + 5)] == \
        ["deadletter"]
    assert live.summary(T0 + 6)["held"] == 1
    assert all(s.exposures[planned["exposure_id"]].provisional for s in (live, ns))


def stage3_product(member_header: dict, name: str, suffixes=("i2d", "cat", "segm")):
    outputs = [{"path": f"/products/{member_header['PROGRAM']}/{name}_{s}.fits",
                "digest": digest(name + s), "size": 1, "suffix": s} for s in suffixes]
    wid = hashlib.sha256(name.encode()).hexdigest()
    return contract.build(
        "product", contract.event_id("product", wid, "success"), work_id=wid, stage="stage3",
        pipeline="calwebb_image3", outcome="success", program=member_header["PROGRAM"],
        observation=member_header["OBSERVTN"], product_name=name, header=member_header,
        inputs=[], outputs=outputs, jwst_version="3.0.0", crds_context="jwst_0001.pmap",
        pointing_quality="CALCULATED", pointing_provisional=False)


def test_wfss_waits_for_the_direct_images_stage3_products():
    state = PlannerState(companion_wait=WAIT)
    grism = product(synthetic_header("NIRCAM", "NRC_WFSS"))
    assert state.observe(grism, T0) == []
    assert "direct_image" in state.summary(T0)["waiting_for"][grism["exposure_id"]]
    direct = synthetic_header("NIRCAM", "NRC_IMAGE", FILTER="F444W", PUPIL="CLEAR",
                              DETECTOR="NRCALONG", MODULE="A", EXPOSURE="00001")
    # an incomplete stage-3 product (no segmentation map yet) is not enough
    assert state.observe(stage3_product(direct, "jw01234-o001_t001_nircam_f444w-clear",
                                        ("i2d", "cat")), T0 + 1) == []
    emits = state.observe(stage3_product(direct, "jw01234-o001_t001_nircam_f444w-clear"), T0 + 2)
    [order] = [e.message for e in emits if e.topic == "work.stage2"]
    assert order["degraded"] is None
    roles = sorted(m["exptype"] for m in order["association"]["products"][0]["members"])
    assert roles == ["direct_image", "science", "segmap", "sourcecat"]
    assert {i["role"] for i in order["inputs"]} >= {"direct_image", "sourcecat", "segmap"}
