"""What a pointing release or correction writes into the products must be
writable: the hold is released before the run, and a released exposure
cannot be released again, so a release whose text fails the run leaves the
exposure with no way past stage 2 but a redelivery."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from calstream.steps.pointing import annotate
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, small_uncal, synthetic_header
from calstream.topics import contract

KEYWORDS = {"ENGQLPTG": "CALCULATED_TRACK_TR_202111", "RA_V1": 53.1, "DEC_V1": -27.8,
            "PA_V3": 120.0, "RA_REF": 53.1, "DEC_REF": -27.8, "ROLL_REF": 119.5}


def test_an_operators_reason_in_any_characters_is_written_into_the_history(tmp_path):
    # annotate() runs after jwst, on every FITS product of the released run;
    # astropy refused the accent and the dash (ValueError: a permanent failure).
    path = tmp_path / "jw01234001001_02101_00001_nrcb1_cal.fits"
    header = {**SMALL_UNCAL_HEADER, **synthetic_header("NIRCAM", "NRC_IMAGE", PROGRAM="01234")}
    path.write_bytes(small_uncal(header, np.zeros((1, 2, 8, 8), dtype=np.uint16)))
    annotate([str(path)], "calstream: hold released by operator: télémétrie perdue — "
                          "vérifié\nà la main (ops)")
    history = "".join(fits.getheader(path)["HISTORY"])  # cards of 72 characters
    for escaped in ("t\\xe9l\\xe9m\\xe9trie perdue", "\\u2014", "\\n\\xe0 la main (ops)"):
        assert escaped in history


@pytest.mark.parametrize("s_region", ["POLYGON ICRS 53.1° -27.8", "POLYGON ICRS\n53.1 -27.8",
                                      "POLYGON " + "1 " * 5000])
def test_a_correction_whose_s_region_no_fits_card_holds_is_refused(s_region):
    # Schema-valid before: the planner released the hold, then apply_pointing
    # failed on the copy in every stage-2 run (astropy: printable ASCII only).
    fields = dict(exposure_id="jw01234001001_02101_00001_nrcb1", action="correct",
                  keywords={**KEYWORDS, "S_REGION": s_region})
    with pytest.raises(contract.InvalidMessage):
        contract.build("pointing_update", "0" * 64, **fields)
    contract.build("pointing_update", "0" * 64, **{
        **fields, "keywords": {**KEYWORDS, "S_REGION": "POLYGON ICRS 53.1 -27.8 53.2 -27.8"}})


@pytest.mark.parametrize("quality", ["CALCULATED_TRACK", "CALCULATED\n", "CALCULATEDé"])
def test_a_correction_whose_quality_jwst_does_not_know_is_refused(quality):
    # "^CALCULATED" let these through: stdatamodels drops a value outside its
    # enum with a warning, so the corrected copy, and its cal file, kept
    # ENGQLPTG = PLANNED while the hold was released as corrected.
    with pytest.raises(contract.InvalidMessage):
        contract.build("pointing_update", "0" * 64, exposure_id="jw01234001001_02101_00001_nrcb1",
                       action="correct", keywords={**KEYWORDS, "ENGQLPTG": quality})


def test_the_qualities_a_correction_may_carry_are_the_datamodels_own():
    # Checked against the installed stdatamodels: a jwst that adds a quality
    # makes this fail, rather than its corrections being refused unseen.
    from importlib.resources import files

    import yaml

    text = (files("stdatamodels.jwst.datamodels") / "schemas" / "core.schema.yaml").read_text()
    found = []
    def walk(node):
        if isinstance(node, dict):
            if node.get("fits_keyword") == "ENGQLPTG":
                found.append(node["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(yaml.safe_load(text))
    [known] = found
    ours = contract.schema("pointing_update")["properties"]["keywords"]["properties"]["ENGQLPTG"]
    assert sorted(ours["enum"]) == sorted(set(known) - {"PLANNED"})
