"""Darks and guide-star data run calwebb_dark / calwebb_guider instead of detector1."""

import pytest

from calstream.daemon.deciders.event_checks import product_event_problems
from calstream.daemon.deciders.work_items import detector1_item, pipeline_of
from calstream.daemon.stages import arrival_product_stages, stage
from calstream.steps.routing import level1_pipeline
from calstream.steps.synthetic.headers import synthetic_header

GUIDER_ID = "jw01019001001_gs-acq1_2022117003102"
DARK_ID = "jw01234001001_02101_00001_nrcb1"
DARKS = [("NIRCAM", "NRC_DARK"), ("NIRISS", "NIS_DARK"), ("NIRSPEC", "NRS_DARK"),
         ("MIRI", "MIR_DARKIMG"), ("MIRI", "MIR_DARKMRS"), ("MIRI", "MIR_DARKALL"),
         ("FGS", "FGS_DARK")]
GUIDERS = ["FGS_ACQ1", "FGS_ACQ2", "FGS_TRACK", "FGS_FINEGUIDE", "FGS_ID-IMAGE", "FGS_ID-STACK"]
NOT_IN_GUIDER_HEADERS = ("VISITGRP", "SEQ_ID", "ACT_ID", "EXPOSURE", "ENGQLPTG")


def guider_header(exp_type: str) -> dict:
    """A guide-star header: none of the exposure keywords guider files never carry."""
    header = synthetic_header("FGS", exp_type)
    return {k: v for k, v in header.items() if k not in NOT_IN_GUIDER_HEADERS}


@pytest.mark.parametrize("instrument,exp_type", DARKS)
def test_every_dark_runs_calwebb_dark(instrument, exp_type):
    assert level1_pipeline(synthetic_header(instrument, exp_type)) == "calwebb_dark"


@pytest.mark.parametrize("exp_type", GUIDERS)
def test_every_guider_mode_runs_calwebb_guider_even_without_exposure_keywords(exp_type):
    assert level1_pipeline(guider_header(exp_type)) == "calwebb_guider"


@pytest.mark.parametrize("header", [
    synthetic_header("NIRCAM", "NRC_IMAGE"),
    synthetic_header("NIRCAM", "NRC_FLAT"),  # detector1 only: still detector1
    synthetic_header("FGS", "FGS_IMAGE"),
    {"INSTRUME": "NIRCAM", "EXP_TYPE": "NOT_A_TYPE"},  # unroutable: the planner says why
])
def test_everything_else_runs_detector1(header):
    assert level1_pipeline(header) == "calwebb_detector1"


def _arrival(exposure_id, header):
    return {"exposure_id": exposure_id, "path": f"/inbox/{exposure_id}_uncal.fits",
            "digest": "sha256:" + "1" * 64, "size": 2880, "detected_at": "2026-01-01T00:00:00Z",
            "header": header}


def _item(exposure_id, header, steps=None):
    arrival_stage = stage("detector1")
    return detector1_item(_arrival(exposure_id, header), task=arrival_stage.task,
                          steps=steps or {"jump": {"rejection_threshold": 5.0}}, key=exposure_id,
                          record=None, pipelines=arrival_stage.pipelines)


def test_the_arrival_stage_runs_the_routed_pipeline_with_its_own_product_stage():
    guider = _item(GUIDER_ID, guider_header("FGS_ACQ1"))
    assert (guider.stage, guider.pipeline) == ("guider", "calwebb_guider")
    assert guider.task_kwargs["pipeline"] == "calwebb_guider"
    # detector1's step overrides are detector1's: the guider runs with CRDS's alone.
    assert guider.task_kwargs["steps"] == {} and guider.parameters == {"steps": {}}
    assert (guider.program, guider.observation, guider.name) == ("01019", "001", GUIDER_ID)
    assert guider.event_fields["pointing_quality"] == "UNKNOWN"
    assert guider.event_fields["pointing_provisional"] is False

    dark = _item(DARK_ID, synthetic_header("NIRCAM", "NRC_DARK", ENGQLPTG="PLANNED"))
    assert (dark.stage, dark.pipeline) == ("dark", "calwebb_dark")
    # A PLANNED dark is no provisional quick look: nothing downstream waits for it.
    assert dark.event_fields["pointing_quality"] == "PLANNED"
    assert dark.event_fields["pointing_provisional"] is False

    steps = {"jump": {"rejection_threshold": 5.0}}
    image = _item(DARK_ID, synthetic_header("NIRCAM", "NRC_IMAGE", ENGQLPTG="PLANNED"), steps)
    assert (image.stage, image.pipeline) == ("detector1", "calwebb_detector1")
    # Unchanged for detector1 (same kwargs, same parameters: same work ids as before).
    # The worker is also told the bytes to calibrate: the arrival's digest.
    assert image.task_kwargs == {"input_path": f"/inbox/{DARK_ID}_uncal.fits", "steps": steps,
                                 "input_digest": "sha256:" + "1" * 64, "input_signature": None}
    assert image.parameters == {"steps": steps}
    assert image.event_fields["pointing_provisional"] is True


def test_a_dark_takes_the_steps_configured_for_calwebb_dark_not_detector1s():
    arrival_stage = stage("detector1")
    configured = {"calwebb_dark": {"ipc": {"skip": True}}}
    item = detector1_item(_arrival(DARK_ID, synthetic_header("NIRCAM", "NRC_DARK")),
                          task=arrival_stage.task, steps={"jump": {"skip": True}}, key="k",
                          record=None, pipelines=arrival_stage.pipelines,
                          other_steps=lambda p: configured.get(p, {}))
    assert item.pipeline == "calwebb_dark"
    assert item.task_kwargs["steps"] == {"ipc": {"skip": True}}
    assert item.parameters == {"steps": {"ipc": {"skip": True}}}


def test_a_stage_without_those_pipelines_runs_detector1():
    item = detector1_item(_arrival(DARK_ID, synthetic_header("NIRCAM", "NRC_DARK")),
                          task="t", steps={}, key="k", record=None)
    assert (item.stage, item.pipeline) == ("detector1", "calwebb_detector1")


def test_metrics_name_the_routed_pipeline():
    header = synthetic_header("NIRCAM", "NRC_DARK")
    assert pipeline_of("detector1", {"header": header}) == "calwebb_dark"
    assert pipeline_of("detector1", None) == "calwebb_detector1"


def test_a_forged_work_order_s_pipeline_is_no_metric_label():
    """A work order naming no pipeline of jwst's is dead-lettered, and was
    counted under its own text: a new label series per forged record, of up
    to a megabyte, kept for the daemon's life."""
    assert pipeline_of("stage2", {"pipeline": "calwebb_image2"}) == "calwebb_image2"
    assert pipeline_of("stage3", {"pipeline": "calwebb_coron3"}) == "calwebb_coron3"
    for forged in ("x" * 100_000, "calwebb_image2 ", "", None, ["calwebb_image2"]):
        assert pipeline_of("stage2", {"pipeline": forged}) == "unknown"
    assert pipeline_of("stage2", None) == "unknown"


def test_dark_and_guider_products_are_made_from_inbox_files():
    assert arrival_product_stages() == ("detector1", "dark", "guider")
    headers = {"dark": synthetic_header("NIRCAM", "NRC_DARK", PROGRAM="01234", OBSERVTN="001",
                                        VISIT="001", EXPOSURE="00001"),
               "guider": {**guider_header("FGS_ACQ1"), "PROGRAM": "01019"}}
    for product_stage, name, suffix in (("dark", DARK_ID, "dark"), ("guider", GUIDER_ID, "cal")):
        event = {"stage": product_stage, "outcome": "success", "program": name[2:7],
                 "observation": name[7:10], "product_name": name, "exposure_id": name,
                 "namespace": "live", "replay": None, "header": headers[product_stage],
                 "pointing_quality": headers[product_stage].get("ENGQLPTG", "UNKNOWN"),
                 "inputs": [{"path": f"/data/inbox/{name}_uncal.fits", "digest": "x"}],
                 "outputs": [{"path": f"/data/products/{name[2:7]}/{name[7:10]}/"
                                      f"{name}_{suffix}.fits", "suffix": suffix}]}
        assert product_event_problems(event, products_root="/data/products",
                                      input_roots=["/data/inbox"]) == []


def test_the_console_shows_dark_and_guider_products_in_detector1s_column():
    import time

    from calstream.daemon.operations import console_pages
    from calstream.daemon.operations.console_data import Snapshot, index_records

    records = [{"event": {"stage": stage, "pipeline": pipeline, "program": "01019",
                          "observation": "001", "exposure_id": name, "product_name": name,
                          "outcome": "success", "emitted_at": "2026-11-24T05:01:00.000Z",
                          "duration_seconds": 2.0}}
               for stage, pipeline, name in (("guider", "calwebb_guider", GUIDER_ID),
                                             ("dark", "calwebb_dark<b>", "jw01019001001_"
                                                                         "02101_00001_nrcb1"))]
    index: dict = {}
    index_records(records, index)
    obs = index[("01019", "001")]
    assert obs.counts()["exposures"] == 2 and obs.counts()["detector1"] == 2
    snapshot = Snapshot(time.time(), "live", index, None, ["live"], "live", [], [], None)
    html = console_pages.observation_page(snapshot, obs, {}).decode()
    assert GUIDER_ID in html and "done (calwebb_guider)" in html
    assert "calwebb_dark&lt;b&gt;" in html  # escaped, like every value a page shows


def test_simulate_offers_every_kit_mode():
    import argparse

    from calstream.daemon.operations.cli import simulate
    from calstream.steps.synthetic.kit import KIT_MODES

    parser = argparse.ArgumentParser()
    simulate._arguments(parser)
    [modes] = [a for a in parser._actions if a.dest == "modes"]
    assert set(modes.choices) == set(KIT_MODES)
