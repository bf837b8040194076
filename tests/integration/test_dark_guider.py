"""Darks and guide-star data through the daemon, as jwst calibrates them.

One daemon run (watcher, arrival stage, planner) on the embedded broker takes
a NIRCam dark and an FGS ACQ1 file named exactly as jwst's own test file,
``jw01019001001_gs-acq1_2022117003102_uncal.fits``. jwst runs calwebb_dark and
calwebb_guider on them *instead of* detector1: each gets one product, in the
product store with its provenance record and a product event, and its data
extensions are bit-identical to a direct ``DarkPipeline.call`` /
``GuiderPipeline.call`` on the same file with the same CRDS context. Neither
goes further: no stage-2 order, no hold (the dark's pointing is PLANNED), no
dead letter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import numpy as np
import pytest
from astropy.io import fits

from calstream.daemon.doers.product_store import ProductStore
from calstream.steps.environment import environ
from calstream.steps.fitsfile import file_digest
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec
from calstream.topics import contract

from .support import daemon_config, products, read_all, running_daemon, wait_for

pytestmark = pytest.mark.integration

GUIDER_ID = "jw01019001001_gs-acq1_2022117003102"  # jwst's test file, minus _uncal.fits
DARK_ID = "jw01019010001_02101_00001_nrcb1"
# Program 01019's visit 001 starts 30 s after that ACQ1 ends (2022, day 117, 00:31:02).
SPEC = ProgramSpec(program="01019", subarray="SUB64P", ngroups=3,
                   visit_start="2022-04-27T00:31:32.000")


@pytest.fixture(scope="module")
def run(tmp_path_factory, broker):
    """The two files through one daemon; its messages, config and kit."""
    root = tmp_path_factory.mktemp("darkguider")
    kit = build_kit(root / "kit", SPEC, modes=("dark", "guider"))
    files = {p.name.removesuffix("_uncal.fits"): p for p in kit.uncal_files}
    assert set(files) == {GUIDER_ID, DARK_ID}
    cfg = daemon_config(root, broker, "darkguider.", workers=1,
                        roles=["watcher", "detector1", "planner"])

    async def daemon_run():
        async with running_daemon(cfg):
            await anyio.to_thread.run_sync(lambda: deliver(list(files.values()), cfg.inbox))
            await wait_for(cfg, ["products"], lambda ms: {p["exposure_id"] for s in
                           ("dark", "guider") for p in products(ms, s)} >= set(files),
                           timeout=300)
        # Everything the daemon said, the planner's reaction included (read once
        # it stopped: read_all's markers would be records for its consumers).
        said = await read_all(cfg, ["products", "work.stage2", "holds", "deadletter"])
        # A restart's start-up scan re-announces inbox files without products:
        # these two have theirs (stage dark and guider), so not them. The
        # watcher is started once its scan is done.
        async with running_daemon(dataclasses.replace(cfg, roles=["watcher"])):
            pass
        return said, await read_all(cfg, ["raw"])

    with environ(kit.crds_env):
        messages, arrivals = anyio.run(daemon_run)
        yield messages, cfg, kit, files, arrivals


def _event(messages, stage: str) -> contract.Message:
    [event] = products(messages, stage)
    return event


def _direct(pipeline_class: str, uncal: Path, out: Path) -> Path:
    """The product of ``<pipeline>.call`` on ``uncal``, as a jwst user runs it."""
    import jwst.pipeline

    out.mkdir(parents=True, exist_ok=True)
    result = getattr(jwst.pipeline, pipeline_class).call(str(uncal), output_dir=str(out),
                                                        save_results=True)
    result.close()
    [product] = [p for p in out.iterdir() if p.name.startswith(uncal.name[:-len("uncal.fits")])]
    return product


def _assert_data_identical(ours: Path, theirs: Path) -> None:
    with fits.open(ours) as a, fits.open(theirs) as b:
        data = [h.name for h in b if h.is_image and h.data is not None]
        assert data and [h.name for h in a if h.is_image and h.data is not None] == data
        for name in data:
            assert a[name].data.dtype == b[name].data.dtype, name
            assert np.array_equal(a[name].data, b[name].data, equal_nan=True), name
        assert a[0].header["CRDS_CTX"] == b[0].header["CRDS_CTX"]


def test_a_dark_gets_calwebb_dark_instead_of_detector1(run, tmp_path):
    messages, cfg, kit, files, arrivals = run
    event = _event(messages, "dark")
    assert not products(messages, "detector1")
    assert (event["pipeline"], event["outcome"], event["exposure_id"]) == (
        "calwebb_dark", "success", DARK_ID)
    assert event["crds_context"] == kit.context
    # A dark has no guide star: PLANNED, yet nothing waits for a correction.
    assert event["pointing_quality"] == "PLANNED" and event["pointing_provisional"] is False
    [output] = event["outputs"]
    # pars-darkpipeline (as CRDS's) names it _dark and skips ipc.
    assert output["suffix"] == "dark" and Path(output["path"]).name == f"{DARK_ID}_dark.fits"
    with fits.open(output["path"]) as hdul:
        steps = {k: hdul[0].header.get(k) for k in ("S_DQINIT", "S_SATURA", "S_IPC",
                                                      "S_SUPERB", "S_REFPIX", "S_LINEAR")}
        assert steps == {"S_DQINIT": "COMPLETE", "S_SATURA": "COMPLETE", "S_IPC": "SKIPPED",
                         "S_SUPERB": "COMPLETE", "S_REFPIX": "COMPLETE", "S_LINEAR": "COMPLETE"}
        assert "S_DARK" not in hdul[0].header  # calwebb_dark stops before dark_current
        assert hdul["SCI"].data.ndim == 4
    with environ(kit.crds_env):
        direct = _direct("DarkPipeline", files[DARK_ID], tmp_path / "direct")
    assert direct.name == f"{DARK_ID}_dark.fits"
    _assert_data_identical(Path(output["path"]), direct)


def test_a_guider_file_named_as_jwst_names_it_gets_calwebb_guider(run, tmp_path):
    messages, cfg, kit, files, arrivals = run
    event = _event(messages, "guider")
    assert (event["pipeline"], event["outcome"], event["exposure_id"], event["program"],
            event["observation"], event["visit"]) == (
        "calwebb_guider", "success", GUIDER_ID, "01019", "001", "001")
    # Guide-star headers carry no ENGQLPTG and no exposure number.
    assert event["header"]["EXP_TYPE"] == "FGS_ACQ1"
    assert not {"ENGQLPTG", "VISITGRP", "SEQ_ID", "ACT_ID", "EXPOSURE"} & set(event["header"])
    assert event["pointing_quality"] == "UNKNOWN" and event["pointing_provisional"] is False
    [output] = event["outputs"]
    assert output["suffix"] == "cal" and Path(output["path"]).name == f"{GUIDER_ID}_cal.fits"
    with fits.open(output["path"]) as hdul:
        assert [hdul[0].header[k] for k in ("S_DQINIT", "S_GUICDS", "S_FLAT")] == [
            "COMPLETE"] * 3
        assert hdul["SCI"].data.shape == (6, 128, 128)  # a count rate per integration
    with environ(kit.crds_env):
        direct = _direct("GuiderPipeline", files[GUIDER_ID], tmp_path / "direct")
    assert direct.name == f"{GUIDER_ID}_cal.fits"
    _assert_data_identical(Path(output["path"]), direct)


def test_both_are_in_the_store_and_go_no_further(run):
    messages, cfg, kit, files, arrivals = run
    store = ProductStore(cfg.products)
    for stage, name in (("dark", DARK_ID), ("guider", GUIDER_ID)):
        event = _event(messages, stage)
        done = store.lookup(event["program"], event["observation"], name=name, stage=stage)
        assert done is not None and done.event["event_id"] == event.event_id
        assert [i["digest"] for i in event["inputs"]] == [file_digest(files[name])]
        for o in event["outputs"]:
            assert file_digest(o["path"]) == o["digest"]
            assert store.announced(Path(o["path"])) is not None
    kinds = [m.type for m in messages if isinstance(m, contract.Message)]
    assert "work_order" not in kinds and "hold" not in kinds
    assert "dead_letter" not in kinds, [m.body for m in messages if m.type == "dead_letter"]
    assert not list(cfg.quarantine.iterdir())
    # Each file announced once: the restart found their products.
    assert sorted(a["exposure_id"] for a in arrivals) == sorted(files)
