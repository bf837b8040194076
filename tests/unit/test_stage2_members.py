"""A stage-2 order's companions are judged by their own files' headers
(deciders/stage2_members.py).

The planner never mixes programs (steps/associations/matching.py), so only a
forged order names another program's rate file as its background, or its
i2d as a direct image. Before, admission read only the science file's own
header: such an order ran, calibrating program A with program B's
proprietary data and writing A's product from it.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from calstream.daemon.deciders.stage2_members import companions_problem, header_paths
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.record_admitter import RecordAdmitter
from calstream.daemon.operations.config import load
from calstream.daemon.stages import stage
from calstream.steps.associations import Exposure, build_level2
from calstream.steps.associations.records import Level3Product
from calstream.steps.routing import route
from calstream.steps.synthetic.headers import (
    SMALL_UNCAL_HEADER,
    exposure_id,
    small_uncal,
    synthetic_header,
)
from calstream.topics import contract

STORE = "/store/01234/001"


def _exposure(instrument, exp_type, variant="default", **kw) -> Exposure:
    header = synthetic_header(instrument, exp_type, variant, **kw)
    eid = exposure_id(header)
    suffix = route(header).stage2_input or "rate"
    return Exposure(eid, header, {suffix: f"{STORE}/{eid}_{suffix}.fits"})


def _direct_image(name: str, **kw) -> Level3Product:
    header = synthetic_header("NIRISS", "NIS_IMAGE", **kw)
    files = {"i2d": f"{name}_i2d.fits", "cat": f"{name}_cat.ecsv", "segm": f"{name}_segm.fits"}
    return Level3Product(name, header, {s: f"{STORE}/{f}" for s, f in files.items()})


def _order(science: Exposure, seen) -> tuple[dict, dict, dict]:
    """The planner's order's fields the check reads, the science file's own
    header, and each companion file's own header."""
    asn = build_level2(route(science.header), science, seen, visit_complete=True)
    order = {"association": asn, "program": asn["program"], "exposure_id": science.exposure_id,
             "instrument": science.header["INSTRUME"], "observation": "001"}
    headers = {p: dict(e.header) for e in seen for p in e.products.values()}
    return order, dict(science.header), {p: headers[p] for p in header_paths(order)}


def _planner_orders():
    nods = [_exposure("MIRI", "MIR_LRS-FIXEDSLIT", EXPOSURE=f"{i:05d}", PATT_NUM=i)
            for i in (1, 2)]
    imprint = _exposure("NIRSPEC", "NRS_IFU", "imprint", EXPOSURE="00009")
    ifu = [_exposure("NIRSPEC", "NRS_IFU", EXPOSURE=f"{i:05d}", PATT_NUM=i) for i in (1, 2)]
    grism = _exposure("NIRISS", "NIS_WFSS", "default")
    direct = _direct_image("jw01234-o001_t001_niriss_clear-f200w", PUPIL=grism.header["PUPIL"])
    return {"nods": _order(nods[0], nods), "imprint": _order(ifu[0], [*ifu, imprint]),
            "wfss": _order(grism, [direct])}


def test_the_planner_s_orders_pass_by_their_companions_own_headers():
    for kind, (order, science, own) in _planner_orders().items():
        types = {m["exptype"] for m in order["association"]["products"][0]["members"]}
        assert types - {"science"}, kind  # each has companions
        assert companions_problem(order, science, own) is None, kind
        # Ids a file writes as numbers are its program's all the same.
        numbers = {p: {**h, "PROGRAM": int(h["PROGRAM"])} for p, h in own.items()}
        assert companions_problem(order, science, numbers) is None, kind


@pytest.mark.parametrize("kind", ["nods", "imprint", "wfss"])
@pytest.mark.parametrize("change, said", [
    ({"PROGRAM": "05678"}, "is of program '05678' by its own header, the order of program 01234"),
    ({"INSTRUME": "NIRCAM"}, "is of instrument 'NIRCAM' by its own header"),
])
def test_a_companion_of_another_program_or_instrument_is_refused(kind, change, said):
    order, science, own = _planner_orders()[kind]
    path = next(iter(own))
    own[path] = {**own[path], **change}
    verdict = companions_problem(order, science, own)
    assert verdict is not None and verdict.action == "dead_letter"
    assert verdict.category == "invalid_message"  # the order lies about its files
    assert said in verdict.reason, verdict.reason


def test_a_companion_nothing_shows_to_be_the_program_s_is_refused():
    order, science, own = _planner_orders()["nods"]
    path = next(iter(own))
    assert "its own header cannot be read" in companions_problem(
        order, science, {path: None}).reason
    without = {k: v for k, v in own[path].items() if k != "PROGRAM"}
    assert "of program None" in companions_problem(order, science, {path: without}).reason


def test_what_no_planner_order_has_is_refused():
    order, science, own = _planner_orders()["wfss"]
    members = order["association"]["products"][0]["members"]
    # A direct image of another observation (its i2d says so).
    i2d = next(m["expname"] for m in members if m["exptype"] == "direct_image")
    other = {**own, i2d: {**own[i2d], "OBSERVTN": "002"}}
    assert "is of observation '002'" in companions_problem(order, science, other).reason
    # A catalog that is not the direct image's own (another program's product).
    forged = copy.deepcopy(order)
    cat = next(m for m in forged["association"]["products"][0]["members"]
               if m["exptype"] == "sourcecat")
    cat["expname"] = "/store/05678/001/jw05678-o001_t001_niriss_clear-f200w_cat.ecsv"
    assert "not one level-3 product's i2d, cat and segm" in companions_problem(
        forged, science, own).reason
    # A member type jwst knows but the planner never gives.
    forged = copy.deepcopy(order)
    forged["association"]["products"][0]["members"][-1]["exptype"] = "selfcal"
    assert "selfcal no stage-2 order" in companions_problem(forged, science, own).reason


def _rate(store: ProductStore, header: dict) -> dict:
    """A rate file in the store whose primary header is ``header``: as an
    order's input names it."""
    path = store.directory(header["PROGRAM"], header["OBSERVTN"]) / \
        f"{exposure_id(header)}_rate.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(small_uncal(header, np.zeros((1, 2, 8, 8), dtype=np.uint16)))
    return {"path": str(path), "digest": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()}


def _with_background(order: contract.Message, background: dict) -> contract.Message:
    body = copy.deepcopy(order.body)
    body["inputs"].append(background)
    body["association"]["products"][0]["members"].append(
        {"expname": background["path"], "exptype": "background"})
    return contract.decode(contract.encode(contract.Message(order.type, body)),
                           expected="work_order")


def planner_order_on_disk(store: ProductStore) -> tuple[contract.Message, dict]:
    """The planner's stage-2 order of a NIRCam image whose rate file is in
    ``store`` (real FITS), and the file's header."""
    from calstream.daemon.deciders.planner_state import PlannerState

    base = {**SMALL_UNCAL_HEADER, "ENGQLPTG": "CALCULATED_TRACK_TR_202111"}
    science = {**base, **synthetic_header("NIRCAM", "NRC_IMAGE", PROGRAM="01234",
                                          EXPOSURE="00001", NEXPOSUR=1)}
    output = {**_rate(store, science), "suffix": "rate"}
    output["size"] = Path(output["path"]).stat().st_size
    eid = exposure_id(science)
    wid = hashlib.sha256(eid.encode()).hexdigest()
    event = contract.build(
        "product", contract.event_id("product", wid), work_id=wid, stage="detector1",
        pipeline="calwebb_detector1", outcome="success", program="01234",
        observation=science["OBSERVTN"], exposure_id=eid, product_name=eid, header=science,
        inputs=[{"path": f"/inbox/{eid}_uncal.fits", "digest": "sha256:" + "0" * 64}],
        outputs=[output], jwst_version="3.0.0", crds_context="jwst_0001.pmap",
        pointing_quality=science["ENGQLPTG"], pointing_provisional=False)
    [order] = [e.message for e in PlannerState(companion_wait=0.0).observe(event, 0.0)
               if e.topic == "work.stage2"]
    return contract.decode(contract.encode(order), expected="work_order"), science


def test_the_stage_2_consumer_refuses_another_program_s_file_as_a_background(tmp_path):
    """Real files and the real admitter: a planner's order of program 01234
    given program 05678's rate file as its background (its name, digest and
    place in the store all real) is dead-lettered; one of its own program's
    is not."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    store = ProductStore(cfg.products)
    order, science = planner_order_on_disk(store)
    admitter = RecordAdmitter(cfg, SimpleNamespace(store=store, publisher=None), stage("stage2"))

    stranger = _rate(store, {**science, "PROGRAM": "05678", "EXPOSURE": "00002"})
    verdict, _ = admitter._judge(_with_background(order, stranger), False)
    assert verdict.action == "dead_letter" and verdict.category == "invalid_message"
    assert "background member 'jw05678001001_02101_00002_nrcb1_rate.fits' is of program " \
           "'05678' by its own header, the order of program 01234" in verdict.reason, verdict

    own = _rate(store, {**science, "EXPOSURE": "00003"})
    verdict, _ = admitter._judge(_with_background(order, own), False)
    assert verdict.action == "run", verdict
