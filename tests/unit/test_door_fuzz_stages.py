"""The door fuzz (tests/door_fuzz.py) on the stage consumers' door.

Arrivals (``raw``, ``replay``) and work orders of stage 2 and 3 (live and
replay topics) go to the real admitter (doers/record_admitter.py) against
real files in tmp roots, through the world of test_forged_work_records.py,
whose checks judge each outcome: a dead letter with a reason (not the
catch-all), a stale record, or a run whose every path lies inside its
roots. After each mutant the valid record is handled again and must run.
Nothing may be written outside the roots.
"""

from __future__ import annotations

import anyio
import pytest

from ..door_fuzz import budget, first_seed, fuzz
from .test_forged_work_records import _files, _handle, _no_crds_cache, _world  # noqa: F401 (autouse)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.parametrize("which", ["arrival", "replayed arrival", "stage2", "stage3",
                                   "replayed order"])
def test_a_stage_record_mutated_is_refused_or_runs_inside_its_roots(tmp_path, which):
    world = _world(tmp_path)
    elsewhere = _files(tmp_path / "elsewhere")
    if which.endswith("arrival"):
        bodies = [a for a in world.arrivals if bool(a.get("replay")) == which.startswith("re")]
    elif which == "replayed order":
        bodies = [o for o in world.orders if o.get("replay")]
    else:
        bodies = [o for o in world.orders if o["stage"] == which and not o.get("replay")]
    assert bodies
    offsets = iter(range(10**9))
    for n, body in enumerate(bodies[:3]):
        stage = "detector1" if "arrival" in which else body["stage"]
        replay = bool(body.get("replay"))

        def take(raw: bytes, body=body, stage=stage, replay=replay) -> str:
            return anyio.run(_handle, world, stage, body, replay, next(offsets), raw)

        def again(body=body, stage=stage, replay=replay) -> None:
            outcome = anyio.run(_handle, world, stage, body, replay, next(offsets))
            assert outcome == "run", f"the valid record after a mutant: {outcome}"

        counts = fuzz(f"{which} #{n}", body, take, after=again, seed=first_seed(),
                      cases=max(1, budget(90) // min(3, len(bodies))),
                      paths=world.hostile_paths, keys=["replay", "namespace", "path", "inputs"])
        assert counts.get("invalid"), counts
    assert _files(tmp_path / "elsewhere") == elsewhere  # nothing written outside the roots
