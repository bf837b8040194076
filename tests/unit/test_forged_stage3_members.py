"""A stage-3 order is run only on members whose own headers make its candidate.

The real admitter (doers/record_admitter.py) on the planner's own stage-3
orders (test_forged_work_records.py's world), each member a FITS file whose
primary header is its exposure's, as jwst writes a cal file. Before, a
stage-3 order was judged by nothing but its names and digests: one whose
member's header was of another filter (its stage-2 product event forged),
or whose header copy said another filter (its product event then did, and
the planner matched WFSS grisms by it), ran.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from astropy.io import fits

from calstream.steps.fitsfile import file_digest

from .planner_stream import CORRECT, steps
from .test_forged_work_records import World, _handle, _world


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_crds_cache(monkeypatch):
    monkeypatch.delenv("CRDS_PATH", raising=False)  # as test_forged_work_records.py


def _stage2_headers(world: World) -> dict[str, dict]:
    """Each stage-2 product's header, by its path in the world's store."""
    return {f"{world.cfg.products}/{o['path'][len('/products/'):]}": payload["header"]
            for kind, payload, _ in steps() if kind == "product" and payload["stage"] == "stage2"
            for o in payload["outputs"]}


def _with_fits_members(world: World, order: dict, **changed: dict) -> dict:
    """``order`` with its members made FITS files of their exposures' headers
    (``changed``: by file name, keywords a member's file has otherwise); their
    digests and sizes now the files'. Pointing as corrected: the stream's
    held exposures' events say PLANNED, their cal files CALCULATED."""
    headers = _stage2_headers(world)
    order = copy.deepcopy(order)
    for item in order["inputs"]:
        path = item["path"]
        header = {**headers[path], "ENGQLPTG": CORRECT["ENGQLPTG"],
                  **changed.get(Path(path).name, {})}
        fits.PrimaryHDU(header=fits.Header(list(header.items()))).writeto(path, overwrite=True)
        item["digest"], item["size"] = file_digest(path), os.path.getsize(path)
    return order


def _image3(world: World) -> dict:
    return next(o for o in world.orders if o["stage"] == "stage3"
                and o["pipeline"] == "calwebb_image3" and not o.get("replay")
                and len(o["inputs"]) > 1)


@pytest.mark.anyio
async def test_the_planner_s_stage_3_orders_run_on_their_members_own_headers(tmp_path):
    world = _world(tmp_path)
    orders = [o for o in world.orders if o["stage"] == "stage3"]
    assert orders
    for n, order in enumerate(orders):
        assert await _handle(world, "stage3", _with_fits_members(world, order),
                             bool(order.get("replay")), n) == "run"


@pytest.mark.anyio
async def test_a_member_whose_own_header_is_of_another_candidate_is_refused(tmp_path):
    # Its stage-2 product event said the mosaic's filter; its file says another.
    world = _world(tmp_path)
    order = _image3(world)
    last = Path(order["inputs"][-1]["path"]).name
    forged = _with_fits_members(world, order, **{last: {"FILTER": "F444W"}})
    sent = len(world.producer.sent)
    assert await _handle(world, "stage3", forged, False, 0) == "invalid"
    [(_, letter)] = world.producer.sent[sent:]
    assert letter["reason"].startswith(
        "its members are no level-3 candidate by their own headers: members belong to 2 "
        "different level-3 candidates"), letter["reason"]


@pytest.mark.anyio
async def test_a_header_copy_of_another_filter_than_its_science_file_is_refused(tmp_path):
    world = _world(tmp_path)
    order = _with_fits_members(world, _image3(world))
    forged = dict(order, header={**order["header"], "FILTER": "F444W"})
    sent = len(world.producer.sent)
    assert await _handle(world, "stage3", forged, False, 0) == "invalid"
    [(_, letter)] = world.producer.sent[sent:]
    assert letter["reason"].startswith("the order's header copy puts its science exposure "), \
        letter["reason"]
    assert "opt_elem: copy 'F444W', file 'F150W'" in letter["reason"]
    # Pointing the copy says otherwise than the file is no candidate's: it runs.
    planned = dict(order, header={**order["header"], "ENGQLPTG": "PLANNED"})
    assert await _handle(world, "stage3", planned, False, 1) == "run"
