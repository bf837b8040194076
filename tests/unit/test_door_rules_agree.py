"""What the watcher lets through the door, every later reader accepts.

A file's header is judged once, at the door (steps/exposure.describe_exposure),
and then travels: in the arrival message (its schema), and as the copy in
every product event, which the planner's intake judges again
(header_copy_problems). A file the door accepts but a later reader refuses
is worse than a refused one: an arrival that cannot be built made the
watcher retry it for good (INSTRUME = 5, PROGRAM = 1234 as a number), and a
product event the intake refuses is a dead letter after detector1 already
ran. So this fuzz writes real FITS files with mutated primary headers and
asks, of every one the door accepts, that the arrival builds as
daemon/roles.py builds it and that its header passes the intake's rule.
"""

from __future__ import annotations

import random

import pytest

from calstream.steps.exposure import BadExposure, describe_exposure, header_copy_problems
from calstream.steps.exposure_keywords import EXPOSURE_KEYWORDS
from calstream.topics import contract

from .test_exposure import write

# Values a FITS card can hold, and the text that looks like what belongs there.
VALUES = [0, -1, 1, 2, 5, 160, 1234, 10**6, 2**40, 1.5, 0.0, -2.5, 1e10, True, False,
          "", " ", "x", "PLANNED", "CALCULATED", "01234", "1234", "1", "001", "NRCB1", "nrcb1",
          "NIRCAM", "NRC_IMAGE", "SUB160P", "FULL", "F150W", "2026-05-26", "12:00:00",
          "2026-13-45", "25:61:00", "-1", "1e400"]
KEYS = [k.name for k in EXPOSURE_KEYWORDS] + ["SUBSIZE1", "SUBSIZE2"]


def _arrival(info) -> contract.Message:
    """As daemon/roles.py's on_arrival builds it (contract.build checks it)."""
    return contract.build(
        "arrival", contract.event_id("arrival", info.exposure_id, "sha256:" + "0" * 64),
        exposure_id=info.exposure_id, path=str(info.path), digest="sha256:" + "0" * 64,
        size=2880, detected_at=contract.utc_now(), source="watch", priority="live",
        header=info.header)


@pytest.mark.parametrize("seed", range(3))
def test_a_header_the_door_accepts_travels(tmp_path, seed):
    rng = random.Random(seed)
    accepted = 0
    for n in range(120):
        changes = {rng.choice(KEYS): rng.choice([*VALUES, None])  # None: the card left out
                   for _ in range(rng.choice([1, 1, 2]))}
        case = tmp_path / str(n)
        case.mkdir()
        try:
            info = describe_exposure(write(case, **changes))
        except BadExposure:
            continue  # quarantined with its reason: fine
        accepted += 1
        try:
            _arrival(info)
        except contract.InvalidMessage as exc:
            pytest.fail(f"{changes}: accepted at the door, but its arrival is refused: {exc}")
        assert header_copy_problems(info.name, info.header) == [], changes
    assert 10 < accepted < 110  # both ways were taken


def test_ids_written_as_integers_travel_as_the_names_text(tmp_path):
    info = describe_exposure(write(tmp_path, PROGRAM=1234, EXPOSURE=1))
    assert (info.header["PROGRAM"], info.header["EXPOSURE"]) == ("01234", "00001")
    _arrival(info)  # was refused: PROGRAM must be text
    assert header_copy_problems(info.name, info.header) == []
    with pytest.raises(BadExposure, match="INSTRUME = 5 is not text"):
        describe_exposure(write(tmp_path, INSTRUME=5))
