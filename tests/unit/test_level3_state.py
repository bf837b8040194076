"""Stage-3 planning from product events alone: completeness, quiet period,
supersession, holds, plans and restarts (no broker: pure logic)."""

from __future__ import annotations

import hashlib

from calstream.daemon.deciders.planner_state import PlannerState
from calstream.steps.associations import validate_level3
from calstream.steps.plans import parse_manifest
from calstream.steps.synthetic.headers import exposure_id, synthetic_header
from calstream.topics import contract

T0 = 1_800_000_000.0
SETTLE = 30.0
QUIET = 600.0


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _event(stage: str, header: dict, suffixes: tuple[str, ...], *, at: float,
           variant: str = "") -> contract.Message:
    eid = exposure_id(header)
    quality = header["ENGQLPTG"]
    outputs = [{"path": f"/products/{header['PROGRAM']}/{header['OBSERVTN']}/{eid}_{s}.fits",
                "digest": digest(f"{eid}{s}{stage}{variant}"), "size": 10, "suffix": s}
               for s in suffixes]
    raw = digest(f"{eid}-{stage}-{quality}{variant}")
    wid = hashlib.sha256(raw.encode()).hexdigest()
    return contract.build(
        "product", contract.event_id("product", wid, "success"), work_id=wid, stage=stage,
        pipeline="calwebb_" + ("detector1" if stage == "detector1" else "image2"),
        outcome="success", program=header["PROGRAM"], observation=header["OBSERVTN"],
        exposure_id=eid, product_name=eid, header=header,
        inputs=[{"path": f"/inbox/{eid}_uncal.fits", "digest": raw}], outputs=outputs,
        jwst_version="3.0.0", crds_context="jwst_0001.pmap", pointing_quality=quality,
        pointing_provisional=quality == "PLANNED", arrived_at=contract.iso(at - 5),
        emitted_at=contract.iso(at))


def rate(header, at, **kw):
    return _event("detector1", header, ("rate", "rateints"), at=at, **kw)


def cal(header, at, suffixes=("cal", "i2d"), **kw):
    return _event("stage2", header, suffixes, at=at, **kw)


def dither(n: int, nexp: int = 4, **overrides) -> dict:
    # SUB160P is read on one detector: NEXPOSUR alone says when the visit is done.
    return synthetic_header("NIRCAM", "NRC_IMAGE", EXPOSURE=f"{n:05d}", NEXPOSUR=nexp,
                            SUBARRAY="SUB160P", **overrides)


def stage3(emits):
    return [e.message for e in emits if e.topic == "work.stage3"]


def feed(state, header, at):
    """detector1 then stage 2 for one exposure; the stage-3 orders that result."""
    return stage3(state.observe(rate(header, at), at)) + \
        stage3(state.observe(cal(header, at + 1), at + 1))


def new_state(**kw) -> PlannerState:
    return PlannerState(companion_wait=60.0, level3_settle=kw.pop("settle", SETTLE),
                        level3_quiet_period=kw.pop("quiet", QUIET), **kw)


def test_a_dithered_visit_makes_one_mosaic_order_after_its_last_dither():
    state = new_state()
    orders = []
    for n in range(1, 5):
        orders += feed(state, dither(n), T0 + 10 * n)
        orders += stage3(state.tick(T0 + 10 * n + 5))
    assert orders == []  # complete only with the 4th, then it settles
    assert stage3(state.tick(T0 + 41 + SETTLE - 1)) == []
    orders = stage3(state.tick(T0 + 41 + SETTLE))
    assert len(orders) == 1
    order = orders[0]
    asn = order["association"]
    validate_level3(asn)
    assert order["pipeline"] == "calwebb_image3" and order["version"] == 1
    assert order["degraded"] is None and asn["degraded_status"] == "No known degraded exposures in association."
    assert order["product_name"] == "jw01234-o001_t001_nircam_clear-f150w-sub160p"
    members = asn["products"][0]["members"]
    assert sorted(m["expname"].rsplit("/", 1)[1] for m in members) == \
        [f"{exposure_id(dither(n))}_cal.fits" for n in range(1, 5)]
    assert {i["role"] for i in order["inputs"]} == {"science"} and len(order["inputs"]) == 4
    # Nothing more, however long it stays quiet.
    assert stage3(state.tick(T0 + 10 * QUIET)) == []
    summary = state.summary(T0 + 10 * QUIET)["level3"]
    assert summary["open"] == 0 and summary["missing"] == {}


def test_a_missing_dither_is_reported_then_closes_degraded_and_a_late_one_supersedes():
    state = new_state()
    for n in (1, 2, 4):
        feed(state, dither(n), T0 + n)
    summary = state.summary(T0 + 100)["level3"]
    missing_id = "jw01234001001_02101_00003_nrcb1"
    assert list(summary["missing"]) == [missing_id]
    assert summary["missing_by_program"] == {"01234": 1}
    assert "1 expected by headers" in summary["candidates"][0]["waiting_for"]["exposures"]
    assert stage3(state.tick(T0 + 5 + QUIET - 1)) == []
    [v1] = stage3(state.tick(T0 + 5 + QUIET))
    assert v1["version"] == 1 and missing_id in v1["degraded"]
    assert v1["association"]["degraded_status"].startswith("Degraded: ")
    assert len(v1["inputs"]) == 3
    # The late dither re-opens the candidate; the new order supersedes.
    late = T0 + 2 * QUIET
    orders = feed(state, dither(3), late)
    orders += stage3(state.tick(late + SETTLE + 1))
    [v2] = orders
    assert v2["version"] == 2 and v2["degraded"] is None and len(v2["inputs"]) == 4
    assert v2["product_name"] == v1["product_name"] and v2["work_id"] != v1["work_id"]
    assert state.summary(late + SETTLE + 1)["level3"]["missing"] == {}


def test_a_held_member_keeps_the_candidate_open_past_the_quiet_period():
    state = new_state()
    for n in (1, 2, 3):
        feed(state, dither(n), T0 + n)
    planned = dither(4, ENGQLPTG="PLANNED")
    state.observe(rate(planned, T0 + 4), T0 + 4)  # held: no stage 2
    assert stage3(state.tick(T0 + 10 * QUIET)) == []
    cand = state.summary(T0 + 10 * QUIET)["level3"]["candidates"][0]
    assert "ENGQLPTG=PLANNED" in cand["waiting_for"]["pointing"]
    # Corrected redelivery: released, calibrated, and the mosaic has all four.
    fixed = dither(4)
    t = T0 + 11 * QUIET
    orders = feed(state, fixed, t) + stage3(state.tick(t + SETTLE + 1))
    assert len(orders) == 1 and orders[0]["degraded"] is None and len(orders[0]["inputs"]) == 4


def test_a_segmented_time_series_waits_for_every_segment_then_tso3():
    state = new_state()
    segments = [synthetic_header("NIRCAM", "NRC_TSIMAGE", EXSEGTOT=3, EXSEGNUM=s,
                                 INTSTART=1 + 10 * (s - 1), INTEND=10 * s)
                for s in (1, 2, 3)]
    orders = []
    for i, h in enumerate(segments[:2]):
        orders += stage3(state.observe(rate(h, T0 + i), T0 + i))
        orders += stage3(state.observe(cal(h, T0 + i, ("calints",)), T0 + i))
    orders += stage3(state.tick(T0 + 5 * SETTLE))
    assert orders == []
    missing = state.summary(T0 + 5 * SETTLE)["level3"]["missing"]
    assert list(missing) == ["jw01234001001_02101_00001-seg003_nrca1"]
    state.observe(rate(segments[2], T0 + 200), T0 + 200)
    state.observe(cal(segments[2], T0 + 201, ("calints",)), T0 + 201)
    [order] = stage3(state.tick(T0 + 201 + SETTLE))
    assert order["pipeline"] == "calwebb_tso3"
    members = order["association"]["products"][0]["members"]
    assert [m["expname"].rsplit("/", 1)[1] for m in members] == [
        f"jw01234001001_02101_00001-seg00{s}_nrca1_calints.fits" for s in (1, 2, 3)]


def manifest(*numbers: int, candidates=("o001",)) -> str:
    import json

    return json.dumps({"exposures": [
        {"exposure_id": exposure_id(dither(n)), "candidates": list(candidates),
         "header": {k: dither(n)[k] for k in ("INSTRUME", "EXP_TYPE", "FILTER", "PUPIL",
                                              "SUBARRAY", "TARGETID", "NEXPOSUR")}}
        for n in numbers]})


def test_a_plan_closes_the_candidate_the_moment_its_last_member_is_calibrated():
    state = new_state(settle=3600.0)  # headers alone would wait an hour
    plan = parse_manifest(manifest(1, 2, 3, 4), source="m.json")
    assert stage3(state.load_plan(plan, T0)) == []
    # Real uncal headers carry no TARGETID (a pool column): the plan supplies it.
    arrivals = [dither(n, TARGETID=None) for n in range(1, 5)]
    assert all("TARGETID" not in h for h in arrivals)
    orders = []
    for n in (1, 2, 3):
        orders += feed(state, arrivals[n - 1], T0 + n)
    assert orders == []
    summary = state.summary(T0 + 4)["level3"]
    assert list(summary["missing"]) == [exposure_id(dither(4))]
    assert summary["candidates"][0]["expected_by"] == "plan"
    state.observe(rate(arrivals[3], T0 + 10), T0 + 10)
    [order] = stage3(state.observe(cal(arrivals[3], T0 + 11), T0 + 11))
    assert order["expected_by"] == "plan" and order["degraded"] is None
    assert len(order["inputs"]) == 4
    assert order["product_name"] == "jw01234-o001_t001_nircam_clear-f150w-sub160p"


def test_a_plan_cross_observation_candidate_combines_two_observations():
    state = new_state(settle=3600.0)
    ids = []
    headers = [dither(1, nexp=1), dither(1, nexp=1, OBSERVTN="002")]
    import json

    plan = parse_manifest(json.dumps({"exposures": [
        {"exposure_id": exposure_id(h), "candidates": [f"o{h['OBSERVTN']}", "c1000"],
         "header": {k: h[k] for k in ("INSTRUME", "EXP_TYPE", "FILTER", "PUPIL", "SUBARRAY",
                                      "TARGETID")}} for h in headers]}))
    state.load_plan(plan, T0)
    orders = []
    for i, h in enumerate(headers):
        ids.append(exposure_id(h))
        orders += feed(state, h, T0 + i)
    mosaic = [o for o in orders if o["association"]["asn_id"] == "c1000"]
    assert len(mosaic) == 1
    validate_level3(mosaic[0]["association"])
    assert mosaic[0]["product_name"].startswith("jw01234-c1000_t001_nircam_clear-f150w")
    assert len(mosaic[0]["inputs"]) == 2
    # Each observation's own candidate is planned too: one member each, closed at once.
    assert sorted(o["association"]["asn_id"] for o in orders) == ["c1000", "o001", "o002"]


def test_a_plan_candidate_within_one_observation_is_that_observations_candidate():
    # A background (or mosaic, group) candidate makes a level-3 association
    # only across observations (jwst's AsnMixin_Science.finalize,
    # MULTI_OBS_AC_TYPES), and asn_generate prunes any other candidate whose
    # members are an observation candidate's: the science observation of an
    # imaging program whose dedicated background is its own observation has
    # one image3, o001's, not a c1000 twin too.
    import json

    state = new_state(settle=3600.0)
    science = [dither(n, nexp=2) for n in (1, 2)]
    background = [dither(n, nexp=2, OBSERVTN="002", BKGDTARG=True, TARGETID=2) for n in (1, 2)]
    plan = parse_manifest(json.dumps({"exposures": [
        {"exposure_id": exposure_id(h), "candidates": [f"o{h['OBSERVTN']}", "c1000"],
         "header": {k: h[k] for k in ("INSTRUME", "EXP_TYPE", "FILTER", "PUPIL", "SUBARRAY",
                                      "TARGETID", "BKGDTARG")}}
        for h in science + background]}))
    state.load_plan(plan, T0)
    orders = []
    for i, h in enumerate(science + background):
        orders += feed(state, h, T0 + i)
    orders += stage3(state.tick(T0 + 10 * QUIET))
    assert sorted((o["association"]["asn_id"], o["association"]["asn_rule"]) for o in orders) \
        == [("o001", "Asn_Lv3Image"), ("o002", "Asn_Lv3ImageBackground")]
    abandoned = state.summary(T0 + 10 * QUIET)["level3"]["abandoned"]
    assert sorted((c["acid"], c["reason"][-25:]) for c in abandoned) == [
        ("c1000", "ssociation as o001's only"), ("c1000", "ssociation as o002's only")]


def test_a_rebuild_from_the_topics_sends_nothing_twice_and_versions_continue():
    events, sent = [], []
    state = new_state()
    for n in (1, 2, 4):
        events += [rate(dither(n), T0 + n), cal(dither(n), T0 + n + 1)]
    for e in events:
        sent += stage3(state.observe(e, contract.parse_time(e["emitted_at"]).timestamp()))
    sent += stage3(state.tick(T0 + 5 + QUIET))  # degraded v1
    late = [rate(dither(3), T0 + 2 * QUIET), cal(dither(3), T0 + 2 * QUIET + 1)]
    for e in late:
        sent += stage3(state.observe(e, T0 + 2 * QUIET + 1))
    sent += stage3(state.tick(T0 + 2 * QUIET + 2 + SETTLE))
    assert [o["version"] for o in sent] == [1, 2]

    # Restart: the orders from the work topic, then every event, at its own time.
    again = new_state()
    for o in sent:
        again.restore_order(o)
    resent = []
    for e in events + late:
        resent += stage3(again.observe(e, contract.parse_time(e["emitted_at"]).timestamp()))
    resent += stage3(again.tick(T0 + 3 * QUIET))
    assert resent == []
    # A further late change continues the numbering.
    newer = cal(dither(2), T0 + 3 * QUIET, variant="recalibrated")
    orders = stage3(again.observe(newer, T0 + 3 * QUIET)) + \
        stage3(again.tick(T0 + 3 * QUIET + SETTLE))
    assert [o["version"] for o in orders] == [3]


def test_orders_validate_against_the_published_schema():
    state = new_state(settle=0.0)
    orders = []
    for n in range(1, 5):
        orders += feed(state, dither(n), T0 + n)
    orders += stage3(state.tick(T0 + 10))
    [order] = orders
    raw = contract.encode(order)
    assert contract.decode(raw, expected="work_order").body == order.body


def test_without_targetid_or_plan_the_mosaic_is_named_t001_as_asn_make_pool_numbers_it():
    state = new_state()
    arrivals = [dither(n, TARGETID=None, TARGNAME="NGC 6543") for n in range(1, 5)]
    for n, header in enumerate(arrivals, start=1):
        feed(state, header, T0 + 10 * n)
    [order] = stage3(state.tick(T0 + 41 + SETTLE))
    assert order["product_name"] == "jw01234-o001_t001_nircam_clear-f150w-sub160p"
    assert order["association"]["target"] == "1"


def test_versions_continue_from_the_product_store_when_the_work_topic_is_lost():
    # The first close: version 1 of the first visit (two dithers).
    state = new_state()
    first = []
    for n in (1, 2):
        first += feed(state, dither(n, nexp=2, VISIT="001"), T0 + n)
    first += stage3(state.tick(T0 + 3 + SETTLE))
    [v1] = first
    assert v1["version"] == 1
    made = dict(v1.body, stage="stage3", outcome="success", version=1)  # its product event
    # A restart on a broker that lost work.stage3: only the product store knows v1.
    again = new_state()
    again.restore_product(made)
    events = []
    for n in (1, 2):
        events += [rate(dither(n, nexp=2, VISIT="001"), T0 + n),
                   cal(dither(n, nexp=2, VISIT="001"), T0 + n + 1)]
    resent = []
    for e in events:
        resent += stage3(again.observe(e, T0 + 10 * SETTLE))
    resent += stage3(again.tick(T0 + 20 * SETTLE))
    assert resent == []  # v1 is made: not ordered again
    later = []
    for n in (1, 2):
        later += feed(again, dither(n, nexp=2, VISIT="002"), T0 + 30 * SETTLE + n)
    later += stage3(again.tick(T0 + 40 * SETTLE))
    [v2] = later
    assert v2["version"] == 2 and len(v2["members"]) == 4
