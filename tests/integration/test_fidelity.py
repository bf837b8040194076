"""Fidelity: every simulated mode through the daemon equals jwst run by hand.

One daemon run (module fixture) calibrates a mixed synthetic program --
NIRCam imaging, a NIRCam imaging time series, MIRI LRS nods, NIRCam
coronagraphy with its PSF reference, NIRISS AMI with its calibrator -- from
uncal to stage 3, with the program's plan loaded. Then, per mode, the same
uncal files go through the pipelines directly, the way a jwst user runs
them: `Detector1Pipeline.call` on each uncal file, the stage-2 and stage-3
pipelines on the associations jwst's generator (`asn_generate`) makes of the
same pool, in the same CRDS context (the kit's offline cache) and with the
step parameters the daemon's provenance records say it used.

Every product of the daemon must have its direct twin, and every data
extension (image and table HDUs byte for byte as written, the arrays stored
in the ASDF tree, table columns) must be bit-identical. Metadata may differ
only where `ALLOWED` (tests/fidelity_compare.py) says, each entry with why.
docs/fidelity.md has the table of modes and results.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.operations.cli.plans import plan_message, publish_plan
from calstream.steps.crds_env import CRDS_VARS, refresh_crds
from calstream.steps.environment import environ
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec

from ..as_planned import exposure
from ..direct_jwst import (
    generated_associations,
    is_level3,
    members,
    run_pipeline,
    steps_in_effect,
    write_association,
)
from ..fidelity_compare import compare_records as compare_mode
from . import ami3_science, coron3_science
from .support import daemon_config, products, running_daemon, wait_for

# The module fixture (the daemon run) counts against its first test's timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

SEED = 13
# Mode -> the pipelines jwst's documentation runs on it, stage by stage.
MODES = {
    "imaging": ("calwebb_detector1", "calwebb_image2", "calwebb_image3"),
    "timeseries": ("calwebb_detector1", "calwebb_image2", "calwebb_tso3"),
    "lrs": ("calwebb_detector1", "calwebb_spec2", "calwebb_spec3"),
    "coron": ("calwebb_detector1", "calwebb_image2", "calwebb_coron3"),
    "ami": ("calwebb_detector1", "calwebb_image2", "calwebb_ami3"),
}
STAGES = ("detector1", "stage2", "stage3")

def _cpu_seconds() -> float:
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.fixture(scope="module")
def daemon_run(tmp_path_factory, broker):
    """The kit, and the daemon's provenance records of every mode, stage by stage:
    (kit, {mode: {stage: [record]}}, jwst's associations of the pool, timings)."""
    root = tmp_path_factory.mktemp("fidelity")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    kit = build_kit(root / "kit", ProgramSpec(dithers=2), seed=SEED, modes=tuple(MODES))
    timings["kit"] = time.perf_counter() - t0
    associations = generated_associations(kit.pool_path)
    level3 = [a for a in associations if is_level3(a)]
    cfg = daemon_config(root, broker, f"fidelity{SEED}.", stage3_settle=0.5,
                        stage3_quiet_period=600.0)

    async def calibrate():
        async with running_daemon(cfg):
            await publish_plan(cfg, plan_message(kit.pool_path, "fidelity test"))
            await anyio.to_thread.run_sync(lambda: deliver(kit.delivery_order(), cfg.inbox))
            await wait_for(cfg, ["products"], lambda ms: len(
                [p for p in products(ms, "stage3")]) >= len(level3), timeout=1200)

    # Only the kit's CRDS settings: none of the session's may leak in.
    with environ({**dict.fromkeys(CRDS_VARS), **kit.crds_env}):
        refresh_crds()
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        anyio.run(calibrate)
        timings["daemon, every mode"] = time.perf_counter() - t0
        # Wall time depends on the machine's load; CPU time (the test process
        # and the daemon's worker processes, reaped by now) much less.
        timings["daemon, every mode (CPU)"] = _cpu_seconds() - cpu0
        mode_of = {parse_exposure_name(f.name).exposure_id: mode
                   for mode, files in kit.by_mode.items() for f in files}
        records: dict[str, dict[str, list[dict]]] = {m: {s: [] for s in STAGES} for m in MODES}
        for record in ProductStore(cfg.products).records():
            event = record["event"]
            ids = {parse_exposure_name(Path(i["path"]).name).exposure_id
                   for i in event["inputs"]}
            [mode] = {mode_of[i] for i in ids}
            records[mode][event["stage"]].append(record)
        yield kit, records, associations, timings
    print("\n" + "\n".join(f"  {k}: {v:.1f} s" for k, v in timings.items()))


def _record_for(records: list[dict], name: str) -> dict:
    """The record of product ``name`` (an exposure id, or a level-3 product name)."""
    [record] = [r for r in records if r["event"]["product_name"] == name]
    return record


def direct_runs(kit, mode: str, records: dict[str, list[dict]], associations,
                out: Path) -> dict[str, float]:
    """Mode ``mode`` run directly into ``out``, each stage with the pipeline and
    steps of the daemon's record of the same product. Returns {stage: CPU s}."""
    cpu = dict.fromkeys(STAGES, 0.0)
    detector1, stage2, stage3 = MODES[mode]
    uncals = sorted(kit.by_mode[mode])
    for uncal in uncals:
        record = _record_for(records["detector1"], uncal.name.rsplit("_", 1)[0])
        cpu["detector1"] += run_pipeline(detector1, uncal, out, steps_in_effect(record))
    ids = {u.name.rsplit("_", 1)[0] for u in uncals}
    mine = [a for a in associations if {m.rsplit("_", 1)[0] for m, _ in members(a)} <= ids]
    for level3, stage, pipeline in ((False, "stage2", stage2), (True, "stage3", stage3)):
        for asn in (a for a in mine if is_level3(a) == level3):
            record = _record_for(records[stage], asn["products"][0]["name"])
            assert record["event"]["pipeline"] == pipeline, (mode, stage)
            cpu[stage] += run_pipeline(pipeline, write_association(asn, out), out,
                                       steps_in_effect(record))
    return cpu


@pytest.mark.parametrize("mode", list(MODES))
def test_every_product_is_bit_identical_to_the_direct_jwst_run(daemon_run, mode, tmp_path):
    kit, records, associations, timings = daemon_run
    mode_records = records[mode]
    for stage in STAGES:
        assert mode_records[stage], f"{mode}: the daemon made no {stage} product"
    for record in (r for stage in STAGES for r in mode_records[stage]):
        assert record["event"]["crds_context"] == kit.context
    direct = tmp_path / "direct"
    direct.mkdir()
    cpu = direct_runs(kit, mode, mode_records, associations, direct)
    timings[f"direct {mode} (CPU)"] = sum(cpu.values())
    compared, failures, extra = compare_mode(mode_records, direct)
    print(f"\n{mode}: {len(compared)} products compared: "
          + ", ".join(sorted({n.rsplit('_', 1)[1] for _, n, _ in compared})))
    for stage, name, differences in compared:
        for d in differences:
            print(f"    {stage} {name}: {d}")
    assert not extra, f"{mode}: direct products the daemon did not make: {extra}"
    assert not failures, f"{mode}:\n" + "\n".join(failures)


def test_level3_associations_have_jwst_members_and_names(daemon_run):
    """The daemon's level-3 associations hold what asn_generate puts in them."""
    _, records, associations, _ = daemon_run
    theirs = {a["products"][0]["name"]: sorted(members(a))
              for a in associations if is_level3(a)}
    ours = {}
    for mode in MODES:
        for record in records[mode]["stage3"]:
            [asn_output] = [o for o in record["event"]["outputs"] if o["suffix"] == "asn"]
            asn = json.loads(Path(asn_output["path"]).read_text())
            ours[asn["products"][0]["name"]] = sorted(members(asn))
    assert ours == theirs


def test_imaging_time_series_and_lrs_nods_reach_their_stage2_products(daemon_run):
    """Stage 2 of each visit, as the daemon published it: the pipeline, the
    products, the level-2 association's members and the CRDS context."""
    from astropy.io import fits
    from jwst.associations import load_asn

    kit, records, _, _ = daemon_run
    expected = {"imaging": ({"cal", "i2d"}, "calwebb_image2", ["science"]),
                "timeseries": ({"calints"}, "calwebb_image2", ["science"]),
                "lrs": ({"cal", "s2d", "x1d"}, "calwebb_spec2", ["background", "science"])}
    stage2 = {r["event"]["product_name"]: r["event"] for mode in expected
              for r in records[mode]["stage2"]}
    for mode, (suffixes, pipeline, roles) in expected.items():
        for f in kit.by_mode[mode]:
            event = stage2[parse_exposure_name(f.name).exposure_id]
            assert event["pipeline"] == pipeline and event["outcome"] == "success", mode
            outputs = {o["suffix"]: o["path"] for o in event["outputs"]}
            assert suffixes <= set(outputs), (mode, sorted(outputs))
            with open(outputs["asn"]) as asn_file:
                asn = load_asn(asn_file)
            assert sorted(m["exptype"] for m in asn["products"][0]["members"]) == roles
            assert event["crds_context"] == kit.context
    # the time series keeps its integrations; the spectra have flux
    ts = stage2[parse_exposure_name(kit.by_mode["timeseries"][0].name).exposure_id]
    with fits.open(next(o["path"] for o in ts["outputs"] if o["suffix"] == "calints")) as hdul:
        assert hdul["SCI"].data.ndim == 3 and hdul["SCI"].data.shape[0] > 1
    for f in kit.by_mode["lrs"]:
        event = stage2[parse_exposure_name(f.name).exposure_id]
        x1d = next(o["path"] for o in event["outputs"] if o["suffix"] == "x1d")
        with fits.open(x1d) as hdul:
            flux = hdul["EXTRACT1D"].data["FLUX"]
            assert (flux[flux == flux] > 0).mean() > 0.8


# --- what coron3 and ami3 made, against what the simulation injected ----------------


def _calibrated(daemon_run, mode: str):
    """The daemon's run of ``mode`` as the science checks take it: (kit, [(the
    planner's Exposure record with its detector1 and stage-2 products, its
    level-2 association)] in observing order, the level-3 association, the
    stage-3 run as {"outputs": [path], "crds_context"})."""
    kit, records, _, _ = daemon_run
    events = {stage: {r["event"]["product_name"]: r["event"] for r in records[mode][stage]}
              for stage in STAGES}

    def asn_of(event) -> dict:
        [path] = [o["path"] for o in event["outputs"] if o["suffix"] == "asn"]
        return json.loads(Path(path).read_text())

    stage2 = []
    for uncal in kit.by_mode[mode]:
        name = uncal.name.rsplit("_", 1)[0]
        made = [o["path"] for stage in ("detector1", "stage2")
                for o in events[stage][name]["outputs"] if o["path"].endswith(".fits")]
        stage2.append((exposure(uncal, made), asn_of(events["stage2"][name])))
    [level3] = events["stage3"].values()
    result = {"outputs": [o["path"] for o in level3["outputs"]],
              "crds_context": level3["crds_context"]}
    return kit, stage2, asn_of(level3), result


@pytest.fixture(scope="module")
def coron3(daemon_run):
    kit, stage2, asn, result = _calibrated(daemon_run, "coron")
    coron3_science.check_level2_associations(stage2)
    return kit, asn, result, {record.exposure_id: record for record, _ in stage2}


def test_coron3_association_joins_science_and_psf(coron3):
    coron3_science.check_coron3_association_joins_science_and_psf(coron3)


def test_psf_reference_removes_the_star(coron3):
    coron3_science.check_psf_reference_removes_the_star(coron3)


def test_companion_recovered_with_its_flux_and_position(coron3):
    coron3_science.check_companion_recovered_with_its_flux_and_position(coron3)


@pytest.fixture(scope="module")
def ami3(daemon_run):
    kit, stage2, asn, result = _calibrated(daemon_run, "ami")
    ami3_science.check_level2_associations(stage2)
    return kit, [record for record, _ in stage2], asn, result


def test_stages_1_and_2_make_calints_of_both_stars(ami3):
    ami3_science.check_stages_1_and_2_make_calints_of_both_stars(ami3)


def test_ami3_association_has_the_target_and_its_calibrator(ami3):
    ami3_science.check_ami3_association_has_the_target_and_its_calibrator(ami3)


def test_ami_analyze_fits_each_star_and_sees_the_jitter(ami3):
    ami3_science.check_ami_analyze_fits_each_star_and_sees_the_jitter(ami3)


def test_ami_normalize_calibrates_the_target_by_its_psf_star(ami3):
    ami3_science.check_ami_normalize_calibrates_the_target_by_its_psf_star(ami3)
