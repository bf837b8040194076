"""Synthetic guide-star files: every simulated guiding activity, named and
read as jwst's guide-star products are (steps/synthetic/guider.py); their
calibration, bit-identical to jwst's, is tests/integration/test_dark_guider.py's."""

from __future__ import annotations

from astropy.io import fits

from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.guider import GuiderSpec, simulate_guider

SPEC = GuiderSpec(program="01019", visit_start="2022-04-27T00:31:32.000")


def test_each_activity_is_a_file_named_by_its_activity_and_end_time(tmp_path):
    files = simulate_guider(tmp_path, SPEC)
    found = {}
    for path in files:
        name = parse_exposure_name(path.name)
        assert name.is_guider and (name.program, name.observation, name.visit) == (
            "01019", "001", "001")
        with fits.open(path) as hdul:
            h = hdul[0].header
            assert "ENGQLPTG" not in h and "EXPOSURE" not in h
            found[h["EXP_TYPE"]] = (path.name.rsplit("_", 1)[0], h["SUBARRAY"],
                                    hdul["SCI"].data.shape)
    assert found == {
        # jwst's own test file's name: the ACQ1 ends 30 s before the visit.
        "FGS_ACQ1": ("jw01019001001_gs-acq1_2022117003102", "128X128", (6, 2, 128, 128)),
        "FGS_ACQ2": ("jw01019001001_gs-acq2_2022117003112", "32X32", (5, 2, 32, 32)),
        "FGS_TRACK": ("jw01019001001_gs-track_2022117003122", "32X32", (12, 2, 32, 32)),
        "FGS_FINEGUIDE": ("jw01019001001_gs-fg_2022117003130", "8X8", (12, 8, 8, 8)),
    }

