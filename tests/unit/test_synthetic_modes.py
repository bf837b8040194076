"""The synthetic stage-2 modes: names, the headers routing and associations read, determinism.

NIRCam imaging time series (program.TimeSeriesSpec), MIRI LRS fixed slit
(spectroscopy.LrsSpec), their references' shared pieces, the level-2
association helper and the kit's modes. No pipeline runs here.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic import spectroscopy as lrs
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import (
    POINTING_CALCULATED,
    POINTING_PLANNED,
    ProgramSpec,
    simulate_program,
    subarray_for,
    target_pixel_position,
)
from calstream.steps.synthetic.spec_references import wavetable
from calstream.steps.synthetic.timeseries import TimeSeriesSpec

TS = TimeSeriesSpec()
LRS = lrs.LrsSpec(planned=(2,))


def headers(path):
    with fits.open(path) as hdul:
        return hdul[0].header, hdul["SCI"].header, hdul["SCI"].data


@pytest.fixture(scope="module")
def time_series(tmp_path_factory):
    return simulate_program(tmp_path_factory.mktemp("ts"), TS)


@pytest.fixture(scope="module")
def lrs_visit(tmp_path_factory):
    return lrs.simulate_lrs(tmp_path_factory.mktemp("lrs"), LRS)


# --- NIRCam imaging time series ---------------------------------------------


def test_point_source_subarrays_sit_in_the_outer_corner():
    assert (subarray_for("nrcb1", "SUB160").xstart, subarray_for("nrcb1", "SUB160").ystart) == (1, 1)
    for name, size in (("SUB64P", 64), ("SUB160P", 160), ("SUB400P", 400)):
        sub = subarray_for("nrcb1", name)
        assert (sub.xstart, sub.ystart) == (2049 - size, 2049 - size)
        assert (sub.xsize, sub.ysize, sub.noutputs) == (size, size, 1)
    assert subarray_for("nrcb1", "SUB64P").frame_time == pytest.approx(0.05016)


def test_time_series_name_and_headers(time_series):
    (path,) = time_series
    assert path.name == "jw01234002001_01101_00001_nrcb1_uncal.fits"
    assert parse_exposure_name(path.name).observation == "002"
    h, sci, data = headers(path)
    assert (h["EXP_TYPE"], h["TSOVISIT"], h["TEMPLATE"]) == (
        "NRC_TSIMAGE",
        True,
        "NIRCam Time Series Imaging",
    )
    assert (h["NINTS"], h["NGROUPS"], h["INTSTART"], h["INTEND"]) == (8, 6, 1, 8)
    assert (h["SUBARRAY"], h["SUBSTRT1"], h["SUBSTRT2"], h["SUBSIZE1"]) == ("SUB64P", 1985, 1985, 64)
    assert (h["FILTER"], h["PUPIL"], h["APERNAME"]) == ("F210M", "CLEAR", "NRCB1_SUB64P")
    assert (h["PATTTYPE"], h["NUMDTHPT"], h["NEXPOSUR"]) == ("NONE", 1, 1)
    assert h["ENGQLPTG"] == POINTING_CALCULATED
    assert data.shape == (8, 6, 64, 64) and data.dtype == np.uint16
    # One INT_TIMES row per integration, inside the exposure, BJD after MJD.
    times = fits.getdata(path, "INT_TIMES")
    assert list(times["integration_number"]) == list(range(1, 9))
    assert np.all(np.diff(times["int_mid_MJD_UTC"]) > 0)
    assert times["int_start_MJD_UTC"][0] >= sci["MJD-BEG"] - 1e-9
    assert times["int_end_MJD_UTC"][-1] <= sci["MJD-END"] + 1e-9
    assert np.all(times["int_mid_BJD_TDB"] > times["int_mid_MJD_UTC"])


def test_time_series_target_dims_during_the_transit(time_series):
    _, _, data = headers(time_series[0])
    x0, y0 = target_pixel_position(TS, 1, "nrcb1")
    assert (x0, y0) == pytest.approx((31.5, 31.5), abs=0.01)
    signal = (data[:, -1].astype(float) - data[:, 0])[:, 20:44, 20:44].sum(axis=(1, 2))
    assert TS.measured_depth(signal) == pytest.approx(TS.transit_depth, abs=0.003)


def test_time_series_is_deterministic(tmp_path, time_series):
    (again,) = simulate_program(tmp_path, TS)
    assert again.read_bytes() == time_series[0].read_bytes()
    (other,) = simulate_program(tmp_path / "other", TS, seed=TS.seed + 1)
    assert not np.array_equal(headers(other)[2], headers(time_series[0])[2])


def test_time_series_needs_integrations():
    with pytest.raises(ValueError, match="nints"):
        TimeSeriesSpec(nints=1).validate()
    with pytest.raises(ValueError, match="exposure type"):
        ProgramSpec(exp_type="NRC_CORON").validate()


# --- MIRI LRS fixed slit ----------------------------------------------------


def test_lrs_names_and_headers(lrs_visit):
    assert [p.name for p in lrs_visit] == [
        "jw01234003001_02101_00001_mirimage_uncal.fits",
        "jw01234003001_02101_00002_mirimage_uncal.fits",
    ]
    for n, path in enumerate(lrs_visit, start=1):
        h, sci, data = headers(path)
        assert (h["INSTRUME"], h["DETECTOR"], h["FILTER"]) == ("MIRI", "MIRIMAGE", "P750L")
        assert (h["EXP_TYPE"], h["SUBARRAY"], h["READPATT"]) == ("MIR_LRS-FIXEDSLIT", "FULL", "FASTR1")
        assert (h["SUBSIZE1"], h["SUBSIZE2"], h["FASTAXIS"], h["SLOWAXIS"]) == (1032, 1024, 1, 2)
        assert (h["PATTTYPE"], h["NUMDTHPT"], h["PATT_NUM"]) == ("ALONG-SLIT-NOD", 2, n)
        assert (h["NEXPOSUR"], h["TSOVISIT"], h["EXPOSURE"]) == (2, False, str(n))
        assert (h["APERNAME"], h["SRCTYAPT"], h["TARGTYPE"]) == ("MIRIM_SLIT", "POINT", "FIXED")
        assert h["ENGQLPTG"] == (POINTING_CALCULATED if n == 1 else POINTING_PLANNED)
        assert (h["NINTS"], h["NGROUPS"], h["NFRAMES"], h["GROUPGAP"]) == (1, 6, 1, 0)
        assert h["TFRAME"] == pytest.approx(2.77504)
        assert data.shape == (1, 6, 1024, 1032) and data.dtype == np.uint16
        assert int(data.max()) < LRS.saturation
        for key in ("V2_REF", "V3_REF", "RA_REF", "DEC_REF", "ROLL_REF", "V3I_YANG", "VPARITY"):
            assert key in sci, key
    h1, h2 = (fits.getheader(p, 0) for p in lrs_visit)
    assert h1["EXPSTART"] < h2["EXPSTART"]


def test_lrs_nods_move_the_source_along_the_slit(lrs_visit):
    (x1, y1), (x2, y2) = (lrs.source_pixel_position(LRS, n) for n in (1, 2))
    assert x2 - x1 == pytest.approx(2 * LRS.nod_offset / lrs.PIXEL_SCALE, abs=0.01)
    assert y1 == pytest.approx(lrs.SLIT_YREF - 1, abs=0.01) and y2 == pytest.approx(y1, abs=0.01)
    row = int(round(y1))
    for path, x in zip(lrs_visit, (x1, x2), strict=True):
        _, _, data = headers(path)
        diff = data[0, -1].astype(float) - data[0, 0]
        # Brightest column on the slit reference row: the source's.
        assert abs(int(np.argmax(diff[row])) - x) <= 1
        # Reference columns see no light; rows off the spectrum see only the faint glow.
        assert abs(np.median(diff[:, :4])) < 5
        assert np.median(diff[600:900, 600:900]) < np.median(diff[row, 310:345])


def test_lrs_is_deterministic(tmp_path):
    one = replace(LRS, nods=1, planned=())
    (a,) = lrs.simulate_lrs(tmp_path / "a", one)
    (b,) = lrs.simulate_lrs(tmp_path / "b", one)
    assert a.read_bytes() == b.read_bytes()


def test_lrs_truth_and_wavetable_agree():
    truth = lrs.lrs_truth(LRS)
    assert truth.wavelength[0] == pytest.approx(5.0) and truth.wavelength[-1] == pytest.approx(14.0)
    assert np.all(np.diff(truth.wavelength) > 0)
    assert truth.source_flux_jy[np.argmin(abs(truth.wavelength - 10))] == pytest.approx(0.01, rel=0.01)
    table = wavetable()
    # jwst fits the table with y decreasing down its rows, wavelength increasing.
    assert np.all(np.diff(table["y_center"]) < 0) and np.all(np.diff(table["wavelength"]) > 0)
    rows = table["y_center"] + lrs.SLIT_YREF - 1
    assert table["wavelength"] == pytest.approx(lrs.wavelength_at_row(rows))
    # The slit passes less of the PSF at long wavelengths, where it is broader.
    through = lrs.slit_throughput(np.array([5.0, 10.0, 14.0]), LRS.psf_fwhm_10um)
    assert 1.0 >= through[0] > through[1] > through[2] > 0.7


def test_lrs_validation():
    with pytest.raises(ValueError, match="ngroups"):
        lrs.LrsSpec(ngroups=4).validate()
    with pytest.raises(ValueError, match="slit"):
        lrs.LrsSpec(nod_offset=2.5).validate()


# --- level-2 associations and the kit ---------------------------------------


def test_level2_association_is_jwst_format(tmp_path, time_series):
    """A synthetic time series gets the level-2 association the planner builds
    (`build_level2`), in a form jwst's own loader accepts."""
    from jwst.associations import load_asn

    from calstream.steps.associations import (
        AssociationError,
        Exposure,
        association_filename,
        build_level2,
    )
    from calstream.steps.routing import route

    rate = tmp_path / "jw01234002001_01101_00001_nrcb1_rateints.fits"
    rate.write_bytes(time_series[0].read_bytes())  # any exposure with the right header
    header = dict(fits.getheader(rate, 0))
    science = Exposure("jw01234002001_01101_00001_nrcb1", header, {"rateints": str(rate)})
    asn = build_level2(route(header), science)
    assert association_filename(asn) == "jw01234-o002_20240115t090000_tso-image2_06000_asn.json"
    assert (asn["asn_type"], asn["asn_rule"]) == ("tso-image2", "Asn_Lv2ImageTSO")
    product = asn["products"][0]
    assert product["name"] == "jw01234002001_01101_00001_nrcb1"
    assert product["members"] == [{"expname": str(rate), "exptype": "science"}]
    assert load_asn(json.dumps(asn))["asn_rule"] == "Asn_Lv2ImageTSO"
    # Same exposure, same bytes.
    again = build_level2(route(header), science)
    assert json.dumps(again) == json.dumps(asn)
    with pytest.raises(AssociationError, match="rateints"):
        build_level2(route(header), Exposure(science.exposure_id, header, {}))


def test_kit_modes_share_one_program_and_reject_unknown_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown modes"):
        build_kit(tmp_path, modes=("imaging", "coronagraphy"))
    kit = build_kit(tmp_path, ProgramSpec(dithers=1), modes=("imaging", "timeseries"),
                    references=False)
    assert set(kit.by_mode) == {"imaging", "timeseries"}
    assert [p.name for p in kit.by_mode["timeseries"]] == [
        "jw01234002001_01101_00001_nrcb1_uncal.fits"
    ]
    assert kit.uncal_files == sorted(kit.by_mode["imaging"] + kit.by_mode["timeseries"])
    assert kit.context is None
