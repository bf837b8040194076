"""The NIRCam DHS exposure (`steps.synthetic.dhs`, build 12.3): headers that
route as DHS, a stripe layout jwst's own readout model agrees with, and
references CRDS selects for it alone. No pipeline runs here."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps.routing import route
from calstream.steps.synthetic import dhs
from calstream.steps.synthetic.crds_cache import build_crds_cache
from calstream.steps.synthetic.dhs_references import ALL_TYPES, write_dhs_reference_files


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("dhs")
    [uncal] = dhs.simulate_dhs(root / "uncal")
    refs = write_dhs_reference_files(root / "references")
    return uncal, refs, build_crds_cache(root / "crds", refs)


def test_the_exposure_routes_as_dhs_spec2_without_stage3(kit):
    uncal, _, _ = kit
    header = fits.getheader(uncal, 0)
    assert uncal.name == "jw01234012001_01101_00001_nrca1_uncal.fits"
    assert (header["EXP_TYPE"], header["PUPIL"], header["SUBARRAY"]) == (
        "NRC_TSGRISM", "GDHS0", "SUB41STRIPE1_DHS")
    r = route(header)
    assert (r.mode, r.stage2, r.stage2_input, r.stage3) == (
        "nircam_dhs", "calwebb_spec2", "rateints", None)


def test_the_stripe_rows_are_those_jwsts_readout_model_reads(kit):
    from jwst.lib.stripe_utils import generate_substripe_ranges
    from stdatamodels.jwst.datamodels import RampModel

    uncal, _, _ = kit
    with RampModel(str(uncal)) as model:
        assert model.data.shape == (2, 3, 41, 2048)
        ranges = generate_substripe_ranges(model)
    rows = np.concatenate([np.arange(*r) for key in ("reference_full", "full")
                           for r in ranges[key].values()])
    assert np.array_equal(rows, dhs.stripe_rows())
    assert dhs.stripe_first_row() == 1527


def test_the_trace_is_in_the_stripe_and_reference_pixels_are_dark():
    rate = dhs.rate_image(dhs.DhsSpec())
    mask = dhs.reference_pixel_mask()
    assert mask[0].all() and not mask[1:, 4:-4].any()
    assert (rate[mask] == 0).all()
    row = 1 + int(dhs.TRACE_ROW)  # the reference row, then the stripe
    lit = np.flatnonzero(rate[row] > 10 * dhs.DhsSpec().sky_rate)
    assert (lit[0], lit[-1]) == tuple(int(x) for x in dhs.TRACE_X)


def test_crds_selects_every_dhs_reference(kit):
    _, refs, context = kit
    assert set(refs) == set(ALL_TYPES)
    with fits.open(refs["superbias"][0]) as hdul:
        assert hdul[0].header["SUBARRAY"] == "SUB41STRIPE1_DHS"
        assert hdul["SCI"].data.shape == (41, 2048)
    assert context == "jwst_0001.pmap"
