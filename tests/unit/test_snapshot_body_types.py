"""A sealed snapshot body that no snapshot could have written is refused whole
(deciders/snapshot_body_types.py): the planner rebuilds from the topics,
and no later decision meets the forged value."""

from __future__ import annotations

import json
import math

import pytest

from calstream.daemon.deciders.snapshot_blocks import SnapshotInvalid
from calstream.daemon.deciders.snapshot_body_types import check
from calstream.daemon.doers import planner_restore, planner_snapshots

from . import planner_stream as stream
from .test_door_fuzz_files import _planner, _resealed, _sealed_body


def _live(body: dict) -> dict:
    return body["namespaces"]["live"]


def _first_l3(body: dict) -> list:
    return _live(body)["l3_candidates"][0]


# Each a field a restore took as it came, and the value a forger put there.
FORGERIES = {
    # door fuzz seed 4, case 373: TypeError in a level-3 decision
    "level-3 candidate opened as text": lambda b: _first_l3(b).__setitem__(2, "1800000010"),
    "level-2 candidate since as text": lambda b: _live(b)["candidates"]["since"].__setitem__(
        0, "x"),
    "an arrival's time NaN": lambda b: _live(b)["arrived"]["since"].__setitem__(1, math.nan),
    "an exposure's time past any date": lambda b: _live(b)["exposures"]["since"].__setitem__(
        0, 10**400),
    "provisional as a number": lambda b: _live(b)["arrived"]["provisional"].__setitem__(0, 0),
    "a level-3 key's tso as text": lambda b: _first_l3(b)[0].__setitem__(6, "false"),
    "a level-3 key's acid as a number": lambda b: _first_l3(b)[0].__setitem__(1, 10**18),
    "a release that is text": lambda b: _live(b)["exposures"]["release"][0].__setitem__(1, "x"),
    "a hold that is no hold record": lambda b: next(iter(b["holds"].values())).__setitem__(
        "state", 7),
    "a route's is_tso as text": lambda b: b["routes"][0].__setitem__("is_tso", "no"),
    "a row number past the exposures": lambda b: _live(b)["visits"][0][1].__setitem__(0, 10**6),
    "a negative row number": lambda b: _live(b)["ordered"]["name"].__setitem__(0, -1),
    "a sent order's version as text": lambda b: _first_l3(b)[5][0].__setitem__(0, "1"),
    "waiting_for as a list": lambda b: _first_l3(b).__setitem__(11, ["x"]),
    "an abandoned reason as a number": lambda b: _first_l3(b).append(7),
    "a stage-2 failure's reason as a number": lambda b: _live(b).__setitem__(
        "stage2_failed", {"jw1": {"w" * 64: 7}}),
    "stage-2 failures as a list": lambda b: _live(b).__setitem__("stage2_failed", ["jw1"]),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_sealed_body_no_snapshot_writes_is_refused(tmp_path, forgery):
    recorded, cut, envelope, body, blocks = _sealed_body(tmp_path)
    forged = json.loads(body)
    FORGERIES[forgery](forged)
    with pytest.raises(SnapshotInvalid, match="snapshot field"):
        check(forged)
    _resealed(planner_snapshots.snapshot_path(tmp_path), envelope, json.dumps(forged).encode(),
              blocks)
    planner = _planner(tmp_path / "p")
    planner.cfg.work_dir = tmp_path
    assert planner_restore.load_snapshot(planner) is False  # a rebuild from the topics
    stream.play(planner.state, recorded)


def test_what_a_snapshot_writes_passes(tmp_path):
    _, _, _, body, _ = _sealed_body(tmp_path)
    check(json.loads(body))
