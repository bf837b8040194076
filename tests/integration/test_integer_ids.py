"""An uncal file whose ids are numbers: its stage-2 order is still its file's.

The door takes an uncal file that writes its ids as numbers (EXPOSURE = 1)
when they agree with its name, and its arrival's header copy has them as the
name writes them ('00001'); jwst writes the uncal file's own values into the
rate file ('1'). The stage-2 admission judges an order's copy by that rate
file's own header (deciders/order_header.py), so the two must be read alike,
and the product event must keep the name's text, which the planner holds an
exposure's header to. Real jwst, real crds against the session's cache.
"""

from __future__ import annotations

import shutil

import pytest
from astropy.io import fits

from calstream.daemon.deciders.order_header import carried_header, header_copy_problem
from calstream.daemon.doers.digest_memo import exposure_header_of
from calstream.steps.detector1 import run_detector1
from calstream.steps.exposure import describe_exposure, header_copy_problems
from calstream.steps.naming import parse_exposure_name

pytestmark = pytest.mark.integration

IDS = ("PROGRAM", "OBSERVTN", "VISIT", "EXPOSURE")


def test_ids_written_as_numbers_pass_the_stage_2_header_check(tmp_path, kit):
    uncal = tmp_path / "inbox" / kit.uncal_files[0].name
    uncal.parent.mkdir()
    shutil.copy(kit.uncal_files[0], uncal)
    with fits.open(uncal, mode="update") as hdul:
        for key in IDS:
            hdul[0].header[key] = int(hdul[0].header[key])
    copy = describe_exposure(uncal).header  # as the door copies it into the arrival
    name = parse_exposure_name(uncal.name)
    assert copy["EXPOSURE"] == name.exposure  # '00001': the name's text

    made = run_detector1(str(uncal), str(tmp_path / "out"))
    [rate] = [p for p in made["outputs"] if p.endswith("_rate.fits")]
    own = exposure_header_of(rate)
    # What the finding was about: jwst writes the id as the uncal file had it.
    assert own["EXPOSURE"] != copy["EXPOSURE"], "jwst now writes the name's text: simplify"

    order = {"header": copy, "exp_type": copy["EXP_TYPE"], "instrument": copy["INSTRUME"],
             "exposure_id": name.exposure_id}
    assert header_copy_problem(order, own) is None
    carried = carried_header(order, own)
    assert {k: carried[k] for k in IDS} == {k: copy[k] for k in IDS}
    assert header_copy_problems(name, carried) == []  # what the planner asks of the event
    # A copy whose id is another exposure's is still refused.
    other = {**order, "header": {**copy, "EXPOSURE": "00002"}}
    assert "EXPOSURE" in header_copy_problem(other, own).reason
