"""The synthetic CRDS cache says 'N/A', not "no match", to an exposure it
serves that a reference type of its instrument does not select: `calstream
simulate --modes dhs mosaic` parked every NIRCam image's image2 on the DHS's
WAVELENGTHRANGE, and the DHS's spec2 on the images' FLAT."""

from __future__ import annotations

from pathlib import Path

import pytest
from astropy.io import fits
from crds.core import rmap

from calstream.steps.synthetic.crds_cache import build_crds_cache

IMAGE = ("NIRCAM", "NRCB1", "SUB160P", "NRC_IMAGE")
DHS = ("NIRCAM", "NRCA1", "SUB41STRIPE1_DHS", "NRC_TSGRISM")


def _reference(path: Path, reftype: str, **cards) -> Path:
    header = fits.Header({"INSTRUME": "NIRCAM", "USEAFTER": "2022-01-01T00:00:00",
                          "REFTYPE": reftype.upper(), **cards})
    fits.PrimaryHDU(header=header).writeto(path)
    return path


def _best(crds_path: Path, context_number: int, reftype: str, exposure) -> str:
    rmap_name = f"jwst_nircam_{reftype}_{context_number:04d}.rmap"
    mapping = rmap.ReferenceMapping.from_file(rmap_name,
                                              path=str(crds_path / "mappings" / "jwst"))
    _, detector, subarray, exp_type = exposure
    try:
        return mapping.get_best_ref({
            "META.INSTRUMENT.DETECTOR": detector, "META.SUBARRAY.NAME": subarray,
            "META.EXPOSURE.TYPE": exp_type, "META.OBSERVATION.DATE": "2024-01-15",
            "META.OBSERVATION.TIME": "10:00:00"})
    except Exception as exc:  # noqa: BLE001 - crds's own "no match" error
        return f"error: {exc}"


@pytest.fixture
def references(tmp_path):
    return {
        # An imaging flat for its detector and subarray, any exposure type.
        "flat": [_reference(tmp_path / "flat.fits", "flat", DETECTOR="NRCB1",
                            SUBARRAY="SUB160P")],
        # A grism's wavelength range: its exposure type only.
        "wavelengthrange": [_reference(tmp_path / "wr.fits", "wavelengthrange",
                                       DETECTOR="NRCA1", EXP_TYPE="NRC_TSGRISM")],
        # A table for any detector, of the imaging modes (p_exptype's keyword).
        "photom": [_reference(tmp_path / "photom.fits", "photom",
                              P_EXP_TY="NRC_IMAGE|NRC_TSIMAGE|")],
    }


def test_a_type_that_selects_none_of_an_exposures_references_is_not_applicable_to_it(
        tmp_path, references):
    cache = tmp_path / "crds"
    build_crds_cache(cache, references, exposures=[IMAGE, DHS])
    assert _best(cache, 1, "flat", IMAGE) == "jwst_nircam_flat_0001.fits"
    assert _best(cache, 1, "flat", DHS) == "NOT FOUND n/a"
    assert _best(cache, 1, "wavelengthrange", DHS) == "jwst_nircam_wavelengthrange_0001.fits"
    assert _best(cache, 1, "wavelengthrange", IMAGE) == "NOT FOUND n/a"
    # The imaging table is not the grism's, though it names no detector.
    assert _best(cache, 1, "photom", IMAGE) == "jwst_nircam_photom_0001.fits"
    assert _best(cache, 1, "photom", DHS) == "NOT FOUND n/a"


def test_an_exposure_the_cache_does_not_serve_still_finds_no_match(tmp_path, references):
    """As with a reference missing: the error stays, and says so."""
    cache = tmp_path / "crds"
    build_crds_cache(cache, references, exposures=[IMAGE])
    other = ("NIRCAM", "NRCA1", "SUB160P", "NRC_IMAGE")
    assert _best(cache, 1, "wavelengthrange", IMAGE) == "NOT FOUND n/a"  # served
    for found in (_best(cache, 1, "flat", other), _best(cache, 1, "wavelengthrange", other)):
        # crds's no match (jwst then fails), not 'N/A' (jwst skips the step)
        assert found.startswith("NOT FOUND") and found != "NOT FOUND n/a", found


def test_a_later_context_serves_the_exposures_an_earlier_one_was_given(tmp_path, references):
    cache = tmp_path / "crds"
    build_crds_cache(cache, references, exposures=[IMAGE, DHS])
    assert build_crds_cache(cache, references, context_number=2) == "jwst_0002.pmap"
    assert _best(cache, 2, "flat", DHS) == "NOT FOUND n/a"
    assert _best(cache, 2, "wavelengthrange", IMAGE) == "NOT FOUND n/a"
