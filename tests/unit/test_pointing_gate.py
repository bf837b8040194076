"""The stage consumers' pointing gate: a PLANNED file goes past detector1
only if the order itself releases it (deciders/pointing_gate.py).

The attack it stops: a forged detector1 product event that calls a PLANNED
exposure's rate file CALCULATED (its digest is the real file's, so every
other check passes). The planner, which reads only the event, orders stage
2; the stage-2 consumer reads the file's own header and dead-letters the
order. Real files, the real planner and the real admitter's judgement; no
broker (the admitter's verdict is what its handler acts on).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from calstream.daemon.deciders.planner_state import PlannerState
from calstream.daemon.deciders.pointing_gate import exposure_of_input, planned_inputs_problem
from calstream.daemon.doers.digest_memo import pointing_of
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.record_admitter import RecordAdmitter
from calstream.daemon.operations.config import load
from calstream.daemon.stages import stage
from calstream.steps.synthetic.headers import (
    SMALL_UNCAL_HEADER,
    exposure_id,
    small_uncal,
    synthetic_header,
)
from calstream.topics import contract

RATE = "/p/01234/001/jw01234001001_02101_00001_nrcb1_rate.fits"
EID = "jw01234001001_02101_00001_nrcb1"


@pytest.mark.parametrize("qualities, releases, held", [
    ({RATE: "PLANNED"}, None, True),
    ({RATE: "planned "}, None, True),  # FITS strings are compared as jwst reads them
    ({RATE: "PLANNED"}, {EID: {"path": "pointing"}}, False),
    ({RATE: "PLANNED"}, {EID: {"path": "operator"}}, False),
    ({RATE: "PLANNED"}, {"jw01234001001_02101_00002_nrcb1": {"path": "operator"}}, True),
    ({RATE: "CALCULATED_TRACK_TR_202111"}, None, False),
    ({RATE: None}, None, False),  # no keyword (guide-star data) or no FITS: the run judges
])
def test_a_planned_input_needs_the_orders_release(qualities, releases, held):
    v = planned_inputs_problem({"releases": releases}, qualities)
    assert (v is not None) == held
    if held:
        assert v.category == "bad_input" and "ENGQLPTG=PLANNED" in v.reason
        assert Path(RATE).name in v.reason


def test_only_per_exposure_products_have_a_pointing_to_hold():
    assert exposure_of_input(RATE) == EID
    assert exposure_of_input("/p/01234/001/jw01234-o001_t001_nircam_clear-f150w_i2d.fits") \
        is None  # a level-3 product (a WFSS direct image)
    assert exposure_of_input("/p/01234/001/jw01234001001_02101_00001_nrcb1_cat.ecsv") is None


def _rate(store: ProductStore, header: dict) -> dict:
    """A rate file in the store whose primary header is ``header``; its
    output entry as a detector1 product event lists it."""
    eid = exposure_id(header)
    path = store.directory(header["PROGRAM"], header["OBSERVTN"]) / f"{eid}_rate.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(small_uncal(header, np.zeros((1, 2, 8, 8), dtype=np.uint16)))
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": str(path), "digest": digest, "size": path.stat().st_size, "suffix": "rate"}


def _product_event(header: dict, output: dict, claimed_quality: str) -> contract.Message:
    eid = exposure_id(header)
    wid = hashlib.sha256(eid.encode()).hexdigest()
    return contract.build(
        "product", contract.event_id("product", wid), work_id=wid, stage="detector1",
        pipeline="calwebb_detector1", outcome="success", program=header["PROGRAM"],
        observation=header["OBSERVTN"], exposure_id=eid, product_name=eid, header=header,
        inputs=[{"path": f"/inbox/{eid}_uncal.fits", "digest": "sha256:" + "0" * 64}],
        outputs=[output], jwst_version="3.0.0", crds_context="jwst_0001.pmap",
        pointing_quality=claimed_quality, pointing_provisional=False)


@pytest.mark.parametrize("file_quality, claimed, refused", [
    ("PLANNED", "CALCULATED_TRACK_TR_202111", True),  # the forgery
    ("CALCULATED_TRACK_TR_202111", "CALCULATED_TRACK_TR_202111", False),
])
def test_an_order_for_a_planned_file_called_calculated_is_dead_lettered(
        tmp_path, file_quality, claimed, refused):
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    store = ProductStore(cfg.products)
    header = {**SMALL_UNCAL_HEADER, **synthetic_header(
        "NIRCAM", "NRC_IMAGE", PROGRAM="01234", EXPOSURE="00001", NEXPOSUR=1),
        "ENGQLPTG": file_quality}
    output = _rate(store, header)
    assert pointing_of(output["path"]) == file_quality  # the file's own header
    event = _product_event(header, output, claimed)
    [order] = [e.message for e in PlannerState(companion_wait=0.0).observe(event, 0.0)
               if e.topic == "work.stage2"]  # the planner believes the event
    order = contract.decode(contract.encode(order), expected="work_order")
    runner = SimpleNamespace(store=store, publisher=None)
    verdict, _ = RecordAdmitter(cfg, runner, stage("stage2"))._judge(order, False)
    if refused:
        assert verdict.action == "dead_letter" and verdict.category == "bad_input"
        assert "ENGQLPTG=PLANNED in their own header" in verdict.reason
    else:
        assert verdict.action == "run"


def test_a_product_replaced_after_the_gate_judged_it_is_not_run(tmp_path):
    """The gate judges the header of the bytes it reads at admission, but
    the run waits for a worker (and is retried, or parked, without another
    admission), and jwst opens the members by name. A rate file replaced
    under the same name meanwhile by PLANNED bytes (a redelivery's detector1
    product) was calibrated with no release: the worker now checks the
    order's inputs before the run (and after it) and refuses other bytes."""
    from calstream.steps.admitted_input import InputChanged
    from calstream.steps.association_run import run_association

    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    store = ProductStore(cfg.products)
    header = {**SMALL_UNCAL_HEADER, **synthetic_header(
        "NIRCAM", "NRC_IMAGE", PROGRAM="01234", EXPOSURE="00001", NEXPOSUR=1),
        "ENGQLPTG": "CALCULATED_TRACK_TR_202111"}
    output = _rate(store, header)
    event = _product_event(header, output, header["ENGQLPTG"])
    [order] = [e.message for e in PlannerState(companion_wait=0.0).observe(event, 0.0)
               if e.topic == "work.stage2"]
    order = contract.decode(contract.encode(order), expected="work_order")
    admitter = RecordAdmitter(cfg, SimpleNamespace(store=store, publisher=None), stage("stage2"))
    verdict, admitted = admitter._judge(order, False)
    assert verdict.action == "run"
    item = admitter.work_item(admitted, "key", None)
    replaced = _rate(store, {**header, "ENGQLPTG": "PLANNED"})  # same name, new bytes
    assert replaced["path"] == output["path"] and replaced["digest"] != output["digest"]
    with pytest.raises(InputChanged, match="changed since it was admitted"):
        run_association(**item.task_kwargs, output_dir=str(tmp_path / "scratch"))
