"""Stage 2 on every synthetic mode, offline: simulate -> detector1 -> level-2 association -> stage 2.

One kit (imaging, imaging time series, MIRI LRS fixed slit) in one synthetic
CRDS context; each exposure goes through detector1 once (module fixture),
then the tests run image2 / spec2 exactly as the daemon does: the level-2
association the planner builds (`build_level2`, the way jwst's level-2 rules
write them), run by the stage-2 worker's `run_association`; and they check
the products against what was injected.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from calstream.steps.associations import Exposure, association_filename
from calstream.steps.crds_env import CRDS_VARS
from calstream.steps.detector1 import run_detector1
from calstream.steps.environment import environ
from calstream.steps.synthetic import spectroscopy as lrs
from calstream.steps.synthetic.kit import MODES, build_kit
from calstream.steps.synthetic.program import (
    POINTING_CALCULATED,
    ProgramSpec,
    detector_flat,
    star_pixel_positions,
    target_pixel_position,
)
from calstream.steps.synthetic.references import PHOTMJSR

from ..as_planned import exposure, level2_association, run_stage2

pytestmark = pytest.mark.integration

IMAGING = ProgramSpec(dithers=1)
SEED = 5  # the imaging mode draws from this seed (see build_kit)
TIMINGS: dict[str, float] = {}

# What each mode's calibration must have taken from the synthetic context
# (meta.ref_file of its products): every type the pipelines ask for and CRDS
# does not call N/A.
NIRCAM_DETECTOR1 = {"mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise", "ipc"}
NIRCAM_IMAGE2 = {"distortion", "filteroffset", "flat", "photom", "area"}
MIRI_DETECTOR1 = {"mask", "saturation", "ipc", "rscd", "linearity", "dark", "reset", "gain", "readnoise"}
MIRI_SPEC2 = {"distortion", "filteroffset", "specwcs", "flat", "pathloss", "photom", "area",
              "extract1d", "apcorr", "psf"}


@pytest.fixture(scope="module")
def visit(tmp_path_factory):
    """The kit with the CRDS environment set for the module, and every exposure's detector1 products."""
    root = tmp_path_factory.mktemp("stage2")
    t0 = time.perf_counter()
    kit = build_kit(root / "kit", IMAGING, seed=SEED, modes=MODES)
    TIMINGS["kit (simulate + references + CRDS cache)"] = time.perf_counter() - t0
    try:
        # Only the kit's CRDS settings: none of the session's may leak in.
        with environ({**dict.fromkeys(CRDS_VARS), **kit.crds_env}):
            products: dict[str, list[dict]] = {}
            for mode, files in kit.by_mode.items():
                products[mode] = [run_detector1(str(f), str(root / "rate")) for f in files]
                TIMINGS[f"detector1 {mode}"] = max(r["duration_seconds"] for r in products[mode])
            yield kit, products, root
    finally:
        print("\n" + "\n".join(f"  {k}: {v:.2f} s" for k, v in TIMINGS.items()))


def _product(result: dict, suffix: str) -> Path:
    matches = [Path(p) for p in result["outputs"] if p.endswith(f"_{suffix}.fits")]
    assert len(matches) == 1, (suffix, result["outputs"])
    return matches[0]


def _record(detector1: dict, **header) -> Exposure:
    """The planner's record of an exposure from its detector1 summary."""
    return exposure(detector1["outputs"][0], detector1["outputs"], **header)


def _asn(science: Exposure, companions=()) -> dict:
    """The association the planner builds: members named by their absolute product paths."""
    from jwst.associations import load_asn

    asn = level2_association(science, companions)
    members = asn["products"][0]["members"]
    assert all(Path(m["expname"]).is_absolute() for m in members)
    # jwst's own loader validates against its level-2b schema.
    loaded = load_asn(json.dumps(asn))
    assert loaded["products"][0]["name"] == science.exposure_id
    return asn


def _fits_products(result: dict, asn: dict, out: Path) -> list[str]:
    """The run's FITS products; the association is archived with them, under its jwst name."""
    assert str(out / association_filename(asn)) in result["outputs"]
    return [p for p in result["outputs"] if p.endswith(".fits")]


def _ref_types(model) -> set[str]:
    refs = model.meta.ref_file.instance
    return {k for k, v in refs.items() if isinstance(v, dict) and v.get("name", "N/A") != "N/A"}


def test_imaging_image2_gives_cal_and_i2d_with_a_wcs(visit, tmp_path, monkeypatch):
    from stdatamodels.jwst.datamodels import ImageModel

    kit, products, _ = visit
    rate = _product(products["imaging"][0], "rate")
    science = _record(products["imaging"][0])
    asn = _asn(science)
    # Run from an empty working directory: nothing may land there, nor beside
    # the members (where jwst 3.0's image2 may look for them).
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    beside = sorted(rate.parent.iterdir())
    out = tmp_path / "image2"

    result = run_stage2(science, asn, out)
    TIMINGS["image2 imaging"] = result["duration_seconds"]

    assert json.loads(json.dumps(result)) == result
    stem = rate.name.removesuffix("_rate.fits")
    assert _fits_products(result, asn, out) == [str(out / f"{stem}_cal.fits"),
                                                str(out / f"{stem}_i2d.fits")]
    assert list(cwd.iterdir()) == []
    assert sorted(rate.parent.iterdir()) == beside
    assert Path.cwd() == cwd
    assert result["pipeline"] == "calwebb_image2"
    assert result["crds_context"] == kit.context

    with ImageModel(str(_product(result, "cal"))) as cal:
        # The pointing quality the daemon reports with the product (ENGQLPTG).
        assert cal.meta.visit.engdb_pointing_quality == POINTING_CALCULATED
        assert cal.meta.ref_file.crds.context_used == kit.context
        assert _ref_types(cal) == NIRCAM_DETECTOR1 | NIRCAM_IMAGE2
        assert cal.meta.cal_step.photom == "COMPLETE"
        assert cal.meta.bunit_data == "MJy/sr"
        # The WCS puts the reference pixel where the header says.
        ra, dec = cal.meta.wcs(cal.meta.wcsinfo.crpix1 - 1, cal.meta.wcsinfo.crpix2 - 1)
        assert ra == pytest.approx(cal.meta.wcsinfo.ra_ref, abs=1e-6)
        assert dec == pytest.approx(cal.meta.wcsinfo.dec_ref, abs=1e-6)
        # Flat fielded and calibrated: away from the stars the sky comes back
        # flat, at the injected rate times PHOTMJSR.
        xs, ys, _ = star_pixel_positions(IMAGING, 1, "nrcb1", seed=SEED)
        yy, xx = np.mgrid[0 : cal.data.shape[0], 0 : cal.data.shape[1]]
        sky = (cal.dq & 1) == 0
        for x0, y0 in zip(xs, ys, strict=True):
            sky &= np.hypot(xx - x0, yy - y0) > 6 * IMAGING.star_sigma
        level = np.median(cal.data[sky])
        assert level == pytest.approx(IMAGING.sky_rate * PHOTMJSR, rel=0.05)
        flat = detector_flat(IMAGING, "nrcb1")
        # The flat's structure is gone: what is left is the noise.
        assert abs(np.corrcoef(cal.data[sky], flat[sky])[0, 1]) < 0.2
    with ImageModel(str(_product(result, "i2d"))) as i2d:
        assert i2d.meta.cal_step.resample == "COMPLETE"
        assert np.isfinite(i2d.data).sum() > 0.9 * 160 * 160


def test_time_series_image2_gives_calints_that_show_the_transit(visit, tmp_path):
    from stdatamodels.jwst.datamodels import CubeModel

    kit, products, _ = visit
    spec = kit.specs["timeseries"]
    science = _record(products["timeseries"][0])
    asn = _asn(science)
    assert asn["asn_type"] == "tso-image2"
    assert asn["products"][0]["members"][0]["expname"] == str(
        _product(products["timeseries"][0], "rateints"))

    result = run_stage2(science, asn, tmp_path / "image2")
    TIMINGS["image2 timeseries"] = result["duration_seconds"]

    # TSO imaging: calints only, no resampled image.
    calints_only = _fits_products(result, asn, tmp_path / "image2")
    assert [Path(p).name.rsplit("_", 1)[1] for p in calints_only] == ["calints.fits"]
    assert result["crds_context"] == kit.context
    with CubeModel(calints_only[0]) as calints:
        assert calints.data.shape == (spec.nints, 64, 64)
        assert calints.meta.exposure.type == "NRC_TSIMAGE"
        assert calints.meta.visit.tsovisit is True
        assert len(calints.int_times) == spec.nints
        assert _ref_types(calints) == NIRCAM_DETECTOR1 | NIRCAM_IMAGE2
        x0, y0 = target_pixel_position(spec, 1, "nrcb1")
        yy, xx = np.mgrid[0:64, 0:64]
        r = np.hypot(xx - x0, yy - y0)
        refpix = (xx >= 60) | (yy >= 60)  # the SUB64P corner holds reference pixels
        annulus = (r > 18) & (r < 26) & ~refpix
        flux = np.array(
            [np.nansum(plane[r < 12] - np.nanmedian(plane[annulus])) for plane in calints.data]
        )
    depth = spec.measured_depth(flux)
    assert depth == pytest.approx(spec.transit_depth, abs=0.003)


@pytest.fixture(scope="module")
def lrs_nod_pair(visit, tmp_path_factory):
    """spec2 on nod 1 with nod 2 as its background, as jwst's LRS nod rule associates them."""
    kit, products, _ = visit
    nod1, nod2 = (_record(r) for r in products["lrs"])
    tmp = tmp_path_factory.mktemp("lrs")
    asn = _asn(nod1, companions=[nod2])
    assert asn["asn_rule"] == "Asn_Lv2MIRLRSFixedSlitNod"
    assert asn["products"][0]["members"][1] == {"expname": nod2.products["rate"],
                                                "exptype": "background"}
    result = run_stage2(nod1, asn, tmp / "spec2")
    TIMINGS["spec2 lrs (nod pair)"] = result["duration_seconds"]
    assert str(tmp / "spec2" / association_filename(asn)) in result["outputs"]
    result = {**result, "outputs": [p for p in result["outputs"] if p.endswith(".fits")]}
    return kit, result


def test_lrs_spec2_gives_cal_s2d_x1d(lrs_nod_pair):
    from stdatamodels.jwst.datamodels import SlitModel

    kit, result = lrs_nod_pair
    assert [Path(p).name.rsplit("_", 1)[1] for p in result["outputs"]] == [
        "cal.fits",
        "s2d.fits",
        "x1d.fits",
    ]
    assert result["pipeline"] == "calwebb_spec2"
    assert result["crds_context"] == kit.context
    with SlitModel(str(_product(result, "cal"))) as cal:
        assert cal.meta.exposure.type == "MIR_LRS-FIXEDSLIT"
        assert cal.meta.ref_file.crds.context_used == kit.context
        assert _ref_types(cal) == MIRI_DETECTOR1 | MIRI_SPEC2 - {"extract1d", "apcorr", "psf"}
        for step in ("assign_wcs", "bkg_subtract", "srctype", "flat_field", "pathloss", "photom"):
            assert getattr(cal.meta.cal_step, step) == "COMPLETE", step
        # The WCS: dispersion along y, the slit reference row at its wavelength.
        assert cal.meta.wcsinfo.dispersion_direction == 2
        _, _, wave = cal.meta.wcs(lrs.SLIT_XREF - 1, lrs.SLIT_YREF - 1)
        assert wave == pytest.approx(float(lrs.wavelength_at_row(lrs.SLIT_YREF - 1)), abs=0.01)
    with SlitModel(str(_product(result, "s2d"))) as s2d:
        assert s2d.meta.cal_step.resample == "COMPLETE"
        assert np.isfinite(s2d.data).mean() > 0.5


def test_lrs_x1d_returns_the_injected_spectrum(lrs_nod_pair):
    from stdatamodels.jwst.datamodels import MultiSpecModel

    kit, result = lrs_nod_pair
    spec = kit.specs["lrs"]
    with MultiSpecModel(str(_product(result, "x1d"))) as x1d:
        # jwst records EXTRACT1D; the APCORR and PSF it read are not recorded.
        assert "extract1d" in _ref_types(x1d)
        assert len(x1d.spec) == 1
        table = x1d.spec[0].spec_table
        wave, flux = np.asarray(table["WAVELENGTH"]), np.asarray(table["FLUX"])
    finite = np.isfinite(wave) & np.isfinite(flux)
    assert wave[finite].min() < 5.1 and wave[finite].max() > 13.9
    assert finite.sum() > 300  # one element per detector row of the spectrum
    band = finite & (wave > 5.2) & (wave < 13.5)
    ratio = flux[band] / lrs.source_flux_jy(spec, wave[band])
    # Photom, pathloss and the aperture correction undo what the simulation did.
    for lo in (5.2, 7.0, 9.0, 11.0):
        sel = (wave[band] >= lo) & (wave[band] < lo + 2.0)
        assert np.median(ratio[sel]) == pytest.approx(1.0, abs=0.03), lo


def test_lrs_rateints_gives_calints_and_x1dints(visit, tmp_path):
    """A multi-integration LRS member, science only: the TSO products (and jwst 3.0's workaround)."""
    from stdatamodels.jwst.datamodels import TSOMultiSpecModel

    kit, products, _ = visit
    # The daemon calibrates an LRS exposure from rateints when it is a time
    # series: the same exposure, routed as one (TSOVISIT, more than one
    # integration), with no companion. The file keeps its one integration:
    # a rateints cube is what takes spec2 down the time-series path.
    science = _record(products["lrs"][1], TSOVISIT=True, NINTS=2)
    asn = _asn(science)
    assert asn["products"][0]["members"] == [
        {"expname": str(_product(products["lrs"][1], "rateints")), "exptype": "science"}]
    result = run_stage2(science, asn, tmp_path / "spec2")
    TIMINGS["spec2 lrs (rateints, science only)"] = result["duration_seconds"]

    assert [Path(p).name.rsplit("_", 1)[1]
            for p in _fits_products(result, asn, tmp_path / "spec2")] == [
        "calints.fits",
        "x1dints.fits",
    ]
    with TSOMultiSpecModel(str(_product(result, "x1dints"))) as x1dints:
        table = x1dints.spec[0].spec_table
        assert len(np.atleast_2d(table["FLUX"])) == kit.specs["lrs"].nints
        flux = np.ravel(table["FLUX"])
        wave = np.ravel(table["WAVELENGTH"])
    band = np.isfinite(flux) & (wave > 5.2) & (wave < 13.5)
    # No nod subtraction here: the extraction's own background boxes take the sky.
    ratio = flux[band] / lrs.source_flux_jy(kit.specs["lrs"], wave[band])
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
