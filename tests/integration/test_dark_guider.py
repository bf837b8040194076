"""Darks and guide-star data through the daemon, as jwst calibrates them.

One daemon run (watcher, arrival stage, planner) on the embedded broker takes
a NIRCam dark, an FGS ACQ1 file named exactly as jwst's own test file,
``jw01019001001_gs-acq1_2022117003102_uncal.fits``, and the same visit's
ACQ2, TRACK and FINEGUIDE files. jwst runs calwebb_dark and
calwebb_guider on them *instead of* detector1: each gets one product, in the
product store with its provenance record and a product event, and its data
extensions are bit-identical to a direct ``DarkPipeline.call`` /
``GuiderPipeline.call`` on the same file with the same CRDS context and the
step parameters of the daemon's provenance record, compared by
tests/fidelity_compare.py like every fidelity test (metadata only as its
allow-list allows). Neither
goes further: no stage-2 order, no hold (the dark's pointing is PLANNED), no
dead letter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest
from astropy.io import fits

from calstream.daemon.doers.product_store import ProductStore
from calstream.steps.environment import environ
from calstream.steps.fitsfile import file_digest
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec
from calstream.topics import contract

from ..direct_jwst import run_pipeline, steps_in_effect
from ..fidelity_compare import compare_records
from .support import daemon_config, products, read_all, running_daemon, wait_for

pytestmark = pytest.mark.integration

GUIDER_ID = "jw01019001001_gs-acq1_2022117003102"  # jwst's test file, minus _uncal.fits
# The visit's other guiding activities (steps/synthetic/guider.py): id -> (EXP_TYPE, cal shape).
OTHER_GUIDING = {
    "jw01019001001_gs-acq2_2022117003112": ("FGS_ACQ2", (5, 32, 32)),
    "jw01019001001_gs-track_2022117003122": ("FGS_TRACK", (12, 32, 32)),
    "jw01019001001_gs-fg_2022117003130": ("FGS_FINEGUIDE", (12, 8, 8)),
}
DARK_ID = "jw01019010001_02101_00001_nrcb1"
# Program 01019's visit 001 starts 30 s after that ACQ1 ends (2022, day 117, 00:31:02).
SPEC = ProgramSpec(program="01019", subarray="SUB64P", ngroups=3,
                   visit_start="2022-04-27T00:31:32.000")


@pytest.fixture(scope="module")
def run(tmp_path_factory, broker):
    """The dark and the guide-star files through one daemon; its messages, config and kit."""
    root = tmp_path_factory.mktemp("darkguider")
    kit = build_kit(root / "kit", SPEC, modes=("dark", "guider"))
    files = {p.name.removesuffix("_uncal.fits"): p for p in kit.uncal_files}
    assert set(files) == {GUIDER_ID, DARK_ID, *OTHER_GUIDING}
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
        # these files have theirs (stage dark and guider), so not them. The
        # watcher is started once its scan is done.
        async with running_daemon(dataclasses.replace(cfg, roles=["watcher"])):
            pass
        return said, await read_all(cfg, ["raw"])

    with environ(kit.crds_env):
        messages, arrivals = anyio.run(daemon_run)
        yield messages, cfg, kit, files, arrivals


def _event(messages, stage: str, exposure_id: str | None = None) -> contract.Message:
    exposure_id = exposure_id or {"dark": DARK_ID, "guider": GUIDER_ID}[stage]
    [event] = [p for p in products(messages, stage) if p["exposure_id"] == exposure_id]
    return event


def _assert_bit_identical(event: contract.Message, cfg, uncal: Path, out: Path) -> None:
    """Every output of ``event`` against the direct ``Pipeline.call`` run on
    ``uncal`` with the steps of the daemon's provenance record, in ``out``:
    every data extension bit-identical, metadata as the shared allow-list
    (tests/fidelity_compare.py) allows; and the direct run makes nothing more."""
    record = ProductStore(cfg.products).lookup(event["program"], event["observation"],
                                               name=event["exposure_id"], stage=event["stage"])
    out.mkdir(parents=True, exist_ok=True)
    run_pipeline(event["pipeline"], uncal, out, steps_in_effect(record.event))
    compared, failures, extra = compare_records({event["stage"]: [{"event": event.body}]},
                                                out, stages=[event["stage"]])
    assert [name for _, name, _ in compared] == [Path(o["path"]).name
                                                 for o in event["outputs"]]
    for _, name, differences in compared:
        print(f"\n{event['stage']} {name}: " + ("; ".join(map(str, differences)) or "identical"))
    assert not extra, f"direct products the daemon did not make: {extra}"
    assert not failures, "\n".join(failures)


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
        _assert_bit_identical(event, cfg, files[DARK_ID], tmp_path / "direct")
    assert (tmp_path / "direct" / f"{DARK_ID}_dark.fits").exists()


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
        _assert_bit_identical(event, cfg, files[GUIDER_ID], tmp_path / "direct")
    assert (tmp_path / "direct" / f"{GUIDER_ID}_cal.fits").exists()


@pytest.mark.parametrize("guider_id", list(OTHER_GUIDING))
def test_the_other_guiding_activities_get_calwebb_guider_too(run, guider_id, tmp_path):
    messages, cfg, kit, files, arrivals = run
    exp_type, shape = OTHER_GUIDING[guider_id]
    event = _event(messages, "guider", guider_id)
    assert (event["pipeline"], event["outcome"], event["header"]["EXP_TYPE"]) == (
        "calwebb_guider", "success", exp_type)
    [output] = event["outputs"]
    assert Path(output["path"]).name == f"{guider_id}_cal.fits"
    with fits.open(output["path"]) as hdul:
        assert hdul["SCI"].data.shape == shape  # a count rate per integration
    with environ(kit.crds_env):
        _assert_bit_identical(event, cfg, files[guider_id], tmp_path / "direct")


def test_both_are_in_the_store_and_go_no_further(run):
    messages, cfg, kit, files, arrivals = run
    store = ProductStore(cfg.products)
    for stage, name in (("dark", DARK_ID), ("guider", GUIDER_ID),
                        *(("guider", g) for g in OTHER_GUIDING)):
        event = _event(messages, stage, name)
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
