"""The synthetic NIRCam program: names, headers routing needs, determinism."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.program import (
    POINTING_CALCULATED,
    POINTING_PLANNED,
    ProgramSpec,
    program_truth,
    simulate_program,
    subarray_for,
)

# Two dithers keep the module fast; one of them planned.
SPEC = ProgramSpec(dithers=2, planned=(2,))


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    out = tmp_path_factory.mktemp("program")
    return simulate_program(out, SPEC)


def headers(path):
    with fits.open(path) as hdul:
        return hdul[0].header, hdul["SCI"].header, hdul["SCI"].data


def test_names_follow_the_convention(program):
    assert [p.name for p in program] == [
        "jw01234001001_02101_00001_nrcb1_uncal.fits",
        "jw01234001001_02101_00002_nrcb1_uncal.fits",
    ]
    for n, path in enumerate(program, start=1):
        name = parse_exposure_name(path.name)
        assert (name.program, name.observation, name.visit) == ("01234", "001", "001")
        assert (name.visit_group, name.sequence, name.activity) == ("02", "1", "01")
        assert name.exposure == f"{n:05d}"
        assert (name.detector, name.suffix) == ("nrcb1", "uncal")
        assert name.filename() == path.name


def test_headers_carry_routing_and_association_keywords(program):
    for n, path in enumerate(program, start=1):
        h, sci, data = headers(path)
        assert h["INSTRUME"] == "NIRCAM"
        assert (h["DETECTOR"], h["MODULE"], h["CHANNEL"]) == ("NRCB1", "B", "SHORT")
        assert (h["FILTER"], h["PUPIL"], h["EXP_TYPE"]) == ("F150W", "CLEAR", "NRC_IMAGE")
        assert (h["PROGRAM"], h["OBSERVTN"], h["VISIT"]) == ("01234", "001", "001")
        assert (h["VISITGRP"], h["SEQ_ID"], h["ACT_ID"]) == ("02", "1", "01")
        assert int(h["EXPOSURE"]) == n and h["EXPCOUNT"] == n
        assert h["VISIT_ID"] == "01234001001"
        assert h["NEXPOSUR"] == SPEC.dithers
        assert h["TSOVISIT"] is False
        assert h["VISITYPE"] == "PRIME_TARGETED_FIXED"
        assert (h["PATTTYPE"], h["NUMDTHPT"], h["PATT_NUM"], h["SUBPXPTS"]) == (
            "SUBARRAY-DITHER",
            SPEC.dithers,
            n,
            1,
        )
        assert (h["NINTS"], h["NGROUPS"], h["NFRAMES"], h["GROUPGAP"]) == (1, 5, 1, 0)
        assert h["READPATT"] == "RAPID"
        assert h["TGROUP"] == pytest.approx(0.27864)
        sub = subarray_for("nrcb1", "SUB160")
        assert (h["SUBARRAY"], h["SUBSTRT1"], h["SUBSTRT2"]) == ("SUB160", 1, 1)
        assert (h["SUBSIZE1"], h["SUBSIZE2"]) == (sub.xsize, sub.ysize) == (160, 160)
        assert (h["FASTAXIS"], h["SLOWAXIS"]) == (1, -2)
        assert h["APERNAME"] == "NRCB1_SUB160"
        assert h["TARGNAME"] and h["TARG_RA"] == SPEC.target_ra
        assert h["GAINFACT"] == 1.0
        for key in ("RA_REF", "DEC_REF", "V2_REF", "V3_REF", "ROLL_REF", "V3I_YANG", "VPARITY"):
            assert key in sci, key
        for key in ("RA_V1", "DEC_V1", "PA_V3", "VA_SCALE", "MJD-BEG", "MJD-END"):
            assert key in sci, key
        assert data.dtype == np.uint16 and data.shape == (1, 5, 160, 160)
        assert int(data.max()) < SPEC.saturation


def test_pointing_quality_and_time_order(program):
    (h1, sci1, _), (h2, sci2, _) = (headers(p) for p in program)
    assert h1["ENGQLPTG"] == POINTING_CALCULATED
    assert h2["ENGQLPTG"] == POINTING_PLANNED
    assert sci1["MJD-END"] < sci2["MJD-BEG"] < sci2["MJD-END"]
    assert h1["EXPSTART"] < h2["EXPSTART"]
    # The dither moves the pointing by the pattern offset (plus, for the planned
    # one, its pointing error): the reference pixel's sky position changes.
    assert (sci1["RA_REF"], sci1["DEC_REF"]) != (sci2["RA_REF"], sci2["DEC_REF"])
    assert program_truth(SPEC).pointing_quality == {1: POINTING_CALCULATED, 2: POINTING_PLANNED}


def test_sky_position_of_stars_is_fixed_while_pixels_move(program):
    """Brightest star: same sky position from each header's WCS, different pixels."""
    from astropy.wcs import WCS

    calc = replace(SPEC, planned=())  # planned WCS is wrong on purpose
    paths = simulate_program(program[0].parent / "calc", calc)
    positions, pixels = [], []
    for path in paths:
        _, sci, data = headers(path)
        ramp = data[0].astype(float)
        diff = ramp[-1] - ramp[0]
        y, x = np.unravel_index(np.argmax(diff), diff.shape)
        pixels.append((x, y))
        box = diff[y - 2 : y + 3, x - 2 : x + 3]
        box = box - np.median(diff)
        yy, xx = np.mgrid[-2:3, -2:3]
        cx, cy = x + (box * xx).sum() / box.sum(), y + (box * yy).sum() / box.sum()
        ra, dec = WCS(sci, naxis=2).all_pix2world(cx, cy, 0)
        positions.append((float(ra), float(dec)))
    assert pixels[0] != pixels[1]
    (ra1, dec1), (ra2, dec2) = positions
    sep_arcsec = np.hypot((ra1 - ra2) * np.cos(np.radians(dec1)), dec1 - dec2) * 3600
    assert sep_arcsec < 0.01  # a third of a pixel (0.031")


def test_same_seed_same_bytes(tmp_path, program):
    again = simulate_program(tmp_path, SPEC)
    for a, b in zip(program, again, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_other_seed_other_data(tmp_path, program):
    other = simulate_program(tmp_path, SPEC, seed=SPEC.seed + 1)
    for a, b in zip(program, other, strict=True):
        assert not np.array_equal(headers(a)[2], headers(b)[2])


def test_planned_must_be_in_the_visit(tmp_path):
    with pytest.raises(ValueError, match="planned"):
        simulate_program(tmp_path, ProgramSpec(dithers=2, planned=(3,)))
