"""The NIRISS WFSS visit (`steps.synthetic.wfss`): headers routing and
associations read, spectra where the dispersion reference says, and a CRDS
context that gives the direct and the grism image each its own FLAT, PHOTOM
and APCORR in the same subarray. No pipeline runs here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps.crds_env import refresh_crds
from calstream.steps.routing import route
from calstream.steps.synthetic import wfss
from calstream.steps.synthetic.crds_cache import build_crds_cache
from calstream.steps.synthetic.wfss_references import write_wfss_reference_files

SPEC = wfss.WfssSpec()


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("wfss")
    files = wfss.simulate_wfss(root / "uncal", SPEC)
    refs = write_wfss_reference_files(root / "references", SPEC)
    context = build_crds_cache(root / "crds", refs)
    return root, files, refs, context


def test_a_direct_image_then_a_grism_image_of_one_visit(kit):
    _, files, _, _ = kit
    direct, grism = (fits.getheader(f, 0) for f in files)
    assert [f.name for f in files] == [
        "jw01234011001_02101_00001_nis_uncal.fits", "jw01234011001_02101_00002_nis_uncal.fits"]
    assert (direct["EXP_TYPE"], direct["FILTER"], direct["PUPIL"]) == ("NIS_IMAGE", "CLEAR", "F150W")
    assert (grism["EXP_TYPE"], grism["FILTER"], grism["PUPIL"]) == ("NIS_WFSS", "GR150C", "F150W")
    assert direct["NEXPOSUR"] == grism["NEXPOSUR"] == 2
    assert route(grism).stage3 == "calwebb_spec3" and "direct_image" in route(grism).needs
    assert route(direct).stage3 == "calwebb_image3"


def test_each_star_disperses_along_its_row_over_the_trace():
    rate = wfss.grism_rate(SPEC)
    for x, y, flux in SPEC.stars:
        row = rate[round(y)]
        lit = np.flatnonzero(row > SPEC.sky_rate + 0.01 * flux / wfss.TRACE_LENGTH)
        # F150W's band sits inside the trace's 1.30-1.70 um: where it starts and ends.
        t0, t1 = ((np.array(wfss.BAND) - wfss.WAVE_RANGE[0])
                  / (wfss.WAVE_RANGE[1] - wfss.WAVE_RANGE[0]))
        start, end = x + wfss.trace_offset(np.array([t0, t1]))[0]
        assert abs(lit.min() - start) <= 1.5 and abs(lit.max() - end) <= 1.5
    assert wfss.direct_rate(SPEC).sum() == pytest.approx(rate.sum(), rel=1e-3)


def test_a_star_off_the_subarray_is_refused():
    with pytest.raises(ValueError, match="off SUB128"):
        wfss.WfssSpec(stars=((90.0, 40.0, 1.0),)).validate()


def test_crds_gives_the_direct_and_the_grism_image_their_own_references(kit, monkeypatch):
    import crds

    root, files, _, context = kit
    for key, value in {"CRDS_PATH": str(root / "crds"), "CRDS_CONTEXT": context,
                       "CRDS_MODE": "local", "CRDS_SERVER_URL": "https://serverless"}.items():
        monkeypatch.setenv(key, value)
    # crds keeps mappings by name per process: another test's jwst_0001.pmap
    # (another cache, other instruments) must be forgotten first.
    refresh_crds(force=True)
    chosen = {}
    for path in files:
        h = fits.getheader(path, 0)
        params = {"META.INSTRUMENT.NAME": "NIRISS", "META.INSTRUMENT.DETECTOR": "NIS",
                  "META.SUBARRAY.NAME": "SUB128", "META.EXPOSURE.TYPE": h["EXP_TYPE"],
                  "META.OBSERVATION.DATE": h["DATE-OBS"], "META.OBSERVATION.TIME": h["TIME-OBS"]}
        chosen[h["EXP_TYPE"]] = {t: Path(p).name for t, p in crds.getreferences(
            params, reftypes=["flat", "photom", "apcorr", "area", "distortion", "specwcs"],
            observatory="jwst", context=context).items()}
    for reftype in ("flat", "photom", "apcorr", "area"):
        assert chosen["NIS_IMAGE"][reftype] != chosen["NIS_WFSS"][reftype]
    assert chosen["NIS_IMAGE"]["distortion"] == chosen["NIS_WFSS"]["distortion"]
    with fits.open(root / "crds" / "references" / "jwst" / chosen["NIS_WFSS"]["photom"]) as h:
        assert h[0].header["EXP_TYPE"] == "NIS_WFSS"
