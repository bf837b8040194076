"""calwebb_detector1 on a synthetic exposure, with synthetic references from an offline CRDS cache.

Real jwst, real crds, no network. In-process: the second pipeline run also
checks that a warm process follows a changed CRDS_CONTEXT.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calstream.steps.crds_env import CRDS_VARS, offline_crds_env, resolve_context
from calstream.steps.detector1 import run_detector1
from calstream.steps.synthetic.crds_cache import build_crds_cache
from calstream.steps.synthetic.program import (
    POINTING_CALCULATED,
    ProgramSpec,
    detector_flat,
    simulate_program,
    star_pixel_positions,
)
from calstream.steps.synthetic.references import write_reference_files

pytestmark = pytest.mark.integration

SPEC = ProgramSpec(dithers=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("crds")
    t0 = time.perf_counter()
    refs = write_reference_files(root / "delivered", SPEC)
    context = build_crds_cache(root / "cache", refs)
    print(f"\nreferences + CRDS cache: {time.perf_counter() - t0:.2f} s")
    assert context == "jwst_0001.pmap"
    return root / "cache", refs


@pytest.fixture(scope="module")
def uncal(tmp_path_factory):
    return simulate_program(tmp_path_factory.mktemp("inbox"), SPEC)[0]


@pytest.fixture
def crds_env(cache, monkeypatch):
    for key in CRDS_VARS:
        monkeypatch.delenv(key, raising=False)
    env = offline_crds_env(cache[0])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_detector1_recovers_the_injected_sky(crds_env, uncal, tmp_path, monkeypatch):
    import jwst
    from stdatamodels.jwst.datamodels import ImageModel, dqflags

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"

    result = run_detector1(str(uncal), str(out))
    print(f"\ndetector1 {SPEC.subarray}: {result['duration_seconds']} s")

    assert json.loads(json.dumps(result)) == result
    stem = "jw01234001001_02101_00001_nrcb1"
    assert result["outputs"] == [str(out / f"{stem}_rate.fits"), str(out / f"{stem}_rateints.fits")]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in result["outputs"])
    assert list(cwd.iterdir()) == []
    assert result["pipeline"] == "calwebb_detector1"
    assert result["jwst_version"] == jwst.__version__
    assert result["crds_context"] == "jwst_0001.pmap"
    assert result["pointing_quality"] == POINTING_CALCULATED
    assert result["duration_seconds"] > 0

    with ImageModel(result["outputs"][0], strict_validation=True) as rate:
        rate.validate()
        assert rate.meta.ref_file.crds.context_used == "jwst_0001.pmap"
        assert rate.meta.cal_step.ramp_fit == "COMPLETE"
        assert rate.meta.ref_file.gain.name == "crds://jwst_nircam_gain_0001.fits"
        data, dq = rate.data, rate.dq

    # Sky: pixels away from every star and not reference pixels, flat field divided out.
    xs, ys, flux = star_pixel_positions(SPEC, 1, "nrcb1")
    yy, xx = np.mgrid[0 : data.shape[0], 0 : data.shape[1]]
    far = np.ones(data.shape, bool)
    for x0, y0 in zip(xs, ys, strict=True):
        far &= np.hypot(xx - x0, yy - y0) > 6 * SPEC.star_sigma
    unusable = dqflags.pixel["DO_NOT_USE"] | dqflags.pixel["REFERENCE_PIXEL"]
    sky = far & (dq & unusable == 0)
    flat = detector_flat(SPEC, "nrcb1")
    measured = float(np.median(data[sky] / flat[sky]))
    assert measured == pytest.approx(SPEC.sky_rate, rel=0.05)

    # The brightest star: flux inside 4 sigma (all but 0.03%), sky removed.
    i = int(np.argmax(flux))
    near = np.hypot(xx - xs[i], yy - ys[i]) < 4 * SPEC.star_sigma
    star = float(np.sum(data[near] - measured * flat[near]))
    expected = float(flux[i] * np.mean(flat[near]))
    assert star == pytest.approx(expected, rel=0.05)


def test_resolve_context_reads_the_cache_default_and_respects_crds_context(crds_env, monkeypatch):
    assert resolve_context() == "jwst_0001.pmap"
    monkeypatch.delenv("CRDS_CONTEXT")
    # No CRDS_CONTEXT: crds asks for the jwst build context, fails offline,
    # and takes the cache's operational context.
    assert resolve_context() == "jwst_0001.pmap"
    assert resolve_context({**crds_env, "CRDS_CONTEXT": "jwst-latest"}) == "jwst_0001.pmap"
    assert resolve_context({**crds_env, "CRDS_CONTEXT": "jwst_0042.pmap"}) == "jwst_0042.pmap"


def test_a_second_context_can_be_built_and_selected(cache, uncal, tmp_path, monkeypatch):
    import crds

    cache_dir = tmp_path / "cache"
    shutil.copytree(cache[0], cache_dir)
    rescaled = write_reference_files(
        tmp_path / "delivered2", replace(SPEC, gain=2.2), reftypes=["gain"]
    )
    refs = {**cache[1], **rescaled}
    assert build_crds_cache(cache_dir, refs, context_number=2, operational=False) == (
        "jwst_0002.pmap"
    )

    # Not operational: the default stays; asking for it by name selects it.
    assert resolve_context(offline_crds_env(cache_dir)) == "jwst_0001.pmap"
    env2 = offline_crds_env(cache_dir, "jwst_0002.pmap")
    assert resolve_context(env2) == "jwst_0002.pmap"

    for key in CRDS_VARS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env2.items():
        monkeypatch.setenv(key, value)
    from stdatamodels.jwst.datamodels import RampModel

    with RampModel(str(uncal)) as model:
        parameters = model.get_crds_parameters()
    best = {
        k: Path(v).name
        for k, v in crds.getreferences(
            parameters, reftypes=["gain", "dark", "pars-tweakregstep"], observatory="jwst"
        ).items()
    }
    assert best == {
        "gain": "jwst_nircam_gain_0002.fits",  # the new delivery
        "dark": "jwst_nircam_dark_0001.fits",  # unchanged: reused, not copied again
        "pars-tweakregstep": "jwst_nircam_pars-tweakregstep_0001.asdf",
    }

    # A warm process (this one already ran detector1 with jwst_0001) follows the new context.
    result = run_detector1(str(uncal), str(tmp_path / "out"))
    assert result["crds_context"] == "jwst_0002.pmap"

    # Built as operational, a new context becomes the default.
    assert build_crds_cache(cache_dir, refs, context_number=3) == "jwst_0003.pmap"
    assert resolve_context({k: v for k, v in env2.items() if k != "CRDS_CONTEXT"}) == (
        "jwst_0003.pmap"
    )
