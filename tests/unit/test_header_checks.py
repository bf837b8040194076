"""The watcher judges every header value: impossible counts and data shapes
that contradict them are refused with a reason, never retried for ever."""

import numpy as np
import pytest

from calstream.steps.exposure import BadExposure, describe_exposure
from calstream.steps.header_checks import count_problems, shape_problems
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, small_uncal

NAME = "jw01234001001_02101_00001_nrcb1_uncal.fits"
OK = {"NGROUPS": 2, "NINTS": 1, "NEXPOSUR": 4}


def test_plausible_counts_pass():
    assert count_problems(OK) == []
    assert count_problems({**OK, "NINTS": 9, "EXSEGTOT": 3, "EXSEGNUM": 2,
                           "INTSTART": 4, "INTEND": 6}) == []


@pytest.mark.parametrize("change,reason", [
    ({"NGROUPS": 0}, "NGROUPS = 0 is outside"),
    ({"NEXPOSUR": -5}, "NEXPOSUR = -5 is outside"),
    ({"NGROUPS": 1e20}, "not an integer"),
    ({"NINTS": 10**12}, "NINTS = 1000000000000 is outside"),
    ({"NINTS": 2.5}, "not an integer"),
    ({"NGROUPS": True}, "not an integer"),
    ({"NGROUPS": "5"}, "not an integer"),
    ({"NGROUPS": None}, "not an integer"),
    ({"EXSEGNUM": 4, "EXSEGTOT": 3}, "beyond EXSEGTOT"),
    ({"NINTS": 9, "INTSTART": 7, "INTEND": 6}, "after INTEND"),
    ({"NINTS": 5, "INTSTART": 4, "INTEND": 6}, "beyond NINTS"),
])
def test_impossible_counts_are_named(change, reason):
    problems = count_problems({**OK, **change})
    assert problems and reason in "; ".join(problems)


def test_a_missing_required_count_is_named():
    assert count_problems({"NGROUPS": 2, "NINTS": 1}) == ["NEXPOSUR is missing"]


def _sci(ints, groups, rows=16, cols=16, naxis=4):
    return {"NAXIS": naxis, "NAXIS1": cols, "NAXIS2": rows, "NAXIS3": groups, "NAXIS4": ints}


def test_shapes_that_match_pass():
    assert shape_problems(OK, _sci(1, 2)) == []
    segment = {**OK, "NINTS": 9, "INTSTART": 4, "INTEND": 6}
    assert shape_problems(segment, _sci(3, 2)) == []
    assert shape_problems({**OK, "SUBSIZE1": 16, "SUBSIZE2": 16}, _sci(1, 2)) == []
    # NIRSpec IRS2 rows carry interleaved reference pixels.
    assert shape_problems({**OK, "SUBSIZE2": 12, "READPATT": "NRSIRS2RAPID"}, _sci(1, 2)) == []


@pytest.mark.parametrize("primary,sci,reason", [
    ({**OK, "NGROUPS": 5}, _sci(1, 3), "3 group(s) but NGROUPS = 5"),
    ({**OK, "NINTS": 2}, _sci(1, 2), "1 integration(s) but NINTS = 2"),
    ({**OK, "NINTS": 9, "INTSTART": 4, "INTEND": 6}, _sci(9, 2), "INTSTART..INTEND = 4..6"),
    ({**OK, "SUBSIZE1": 64}, _sci(1, 2), "NAXIS1 = 16 but SUBSIZE1 = 64"),
    (OK, _sci(1, 2, naxis=2), "NAXIS = 2"),
    (OK, {**_sci(1, 2), "NAXIS3": None}, "not positive integers"),
])
def test_shapes_that_contradict_the_counts_are_named(primary, sci, reason):
    assert reason in "; ".join(shape_problems(primary, sci))


def _file(tmp_path, data=None, **changes):
    p = tmp_path / NAME
    data = np.zeros((1, 2, 16, 16), dtype=np.uint16) if data is None else data
    p.write_bytes(small_uncal({**SMALL_UNCAL_HEADER, **changes}, data))
    return p


def _replace_card(path, key, raw_value):
    """Write a card astropy itself would refuse to write (NaN, inf)."""
    blob = path.read_bytes()
    start = blob.index(key.ljust(8).encode() + b"= ")
    card = (key.ljust(8) + "= " + raw_value.rjust(20)).ljust(80).encode()
    path.write_bytes(blob[:start] + card + blob[start + 80:])


@pytest.mark.parametrize("key,raw", [("NGROUPS", "NaN"), ("NEXPOSUR", "inf"),
                                     ("NINTS", "1.0.0"), ("NGROUPS", "'two'")])
def test_unparseable_or_non_numeric_cards_are_bad_exposures(tmp_path, key, raw):
    path = _file(tmp_path)
    _replace_card(path, key, raw)
    with pytest.raises(BadExposure, match=key):
        describe_exposure(path)


@pytest.mark.parametrize("changes,reason", [
    ({"NGROUPS": 0}, "NGROUPS = 0"),
    ({"NEXPOSUR": -5}, "NEXPOSUR = -5"),
    ({"NGROUPS": 1e20}, "not an integer"),
    ({"NINTS": 10**12}, "NINTS"),
    ({"NGROUPS": 5}, "group(s) but NGROUPS = 5"),
])
def test_impossible_files_are_bad_exposures(tmp_path, changes, reason):
    with pytest.raises(BadExposure, match="impossible header") as info:
        describe_exposure(_file(tmp_path, **changes))
    assert reason in str(info.value)


def test_a_good_file_still_passes(tmp_path):
    assert describe_exposure(_file(tmp_path)).header["NGROUPS"] == 2
