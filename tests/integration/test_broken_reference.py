"""A reference cut short in the CRDS cache parks the exposures that use it,
and they go on by themselves once the file is whole again.

What a ``crds sync`` stopped by a full disk leaves: the superbias reference
truncated in place in a private copy of the session kit's cache. jwst then
fails with an error that reads as the data's (``cannot reshape array``);
before, the exposure was dead-lettered as a permanent failure. Real broker,
real jwst, real crds; the product made after the repair is compared with a
direct jwst run on the whole cache.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import anyio
import pytest
from astropy.io import fits

from calstream.steps.crds_env import refresh_crds
from calstream.steps.environment import environ
from calstream.steps.synthetic.downlink import deliver

from ..direct_jwst import run_pipeline, steps_in_effect
from ..fidelity_compare import ALLOWED, compare_products, unexplained
from .support import daemon_config, metric, products, read_all, running_daemon, scrape, wait_for
from .test_parking import FAST_PARKING, dead_letters, exposure_id, until_unparked, wait_parked

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _lines(caplog, words: str) -> int:
    return sum(words in r.getMessage() for r in caplog.records)


async def test_truncated_crds_reference_parks_and_resumes_when_whole(tmp_path, broker, kit,
                                                                      unique_prefix, caplog):
    caplog.set_level("DEBUG", logger="calstream.stage")
    cache = tmp_path / "crds"
    shutil.copytree(kit.crds_env["CRDS_PATH"], cache)
    whole = {p: p.read_bytes() for p in cache.rglob("*_superbias_*.fits")}
    assert whole
    for path, data in whole.items():
        os.truncate(path, len(data) // 2)  # the sync's download stopped half-way
    env = {**kit.crds_env, "CRDS_PATH": str(cache)}
    cfg = daemon_config(tmp_path, broker, unique_prefix, **FAST_PARKING)
    uncal = kit.uncal_files[0]
    with environ(env):
        async with running_daemon(cfg) as daemon:
            await anyio.to_thread.run_sync(lambda: deliver([uncal], cfg.inbox))
            await wait_parked(daemon, "crds_reference_corrupt")
            assert not dead_letters(await read_all(cfg, ["deadletter"]))
            # Parked, its turns pass with no run while the file is the broken one it was.
            with anyio.fail_after(60):
                while _lines(caplog, "is as it was: not run this turn") < 3:
                    await anyio.sleep(0.2)
            assert _lines(caplog, "calwebb_detector1 starting (attempt") == cfg.max_attempts
            for path, data in whole.items():  # synced again: a whole file in its place
                part = path.with_name(path.name + ".part")
                part.write_bytes(data)
                part.rename(path)
            repaired = time.monotonic()
            msgs = await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 1,
                                  timeout=120)
            recovery = time.monotonic() - repaired
            await until_unparked(daemon)
            after = scrape(daemon.ops.address)
        event = products(msgs)[0]
        print(f"\nCRDS reference truncated: product {recovery:.1f} s after the file was whole "
              f"again, {event['duration_seconds']:.1f} s of it the run")
        assert event["outcome"] == "success" and event["exposure_id"] == exposure_id(uncal)
        assert metric(after, "calstream_parked_items") == 0
        assert metric(after, "calstream_parked_total", cause="crds_reference_corrupt") == 1
        assert metric(after, "calstream_parked_total") == 1  # parked on no other cause
        assert metric(after, "calstream_dead_letters_total") == 0
        assert not dead_letters(await read_all(cfg, ["deadletter"]))
        # The product is the one a direct run on the whole cache makes.
        direct = tmp_path / "direct"
        direct.mkdir()
        refresh_crds()  # this process's crds: to the repaired copy too
        await anyio.to_thread.run_sync(run_pipeline, "calwebb_detector1", uncal, direct,
                                       steps_in_effect(event))
    compared = 0
    for output in event["outputs"]:
        ours = Path(output["path"])
        differences = compare_products(ours, direct / ours.name)
        assert not unexplained(differences, ALLOWED), (ours.name, differences)
        compared += 1
    assert compared >= 1


def _cropped(path: Path, side: int) -> None:
    """``path`` rewritten whole, its images cut to ``side`` x ``side``: a
    reference of the wrong shape for the exposure, which fails the step
    reading it on the merits (a broadcast), not for missing bytes."""
    part = path.with_name(path.name + ".part")
    with fits.open(path) as hdul:
        for hdu in hdul:
            if getattr(hdu.data, "ndim", 0) == 2:
                hdu.data = hdu.data[:side, :side].copy()
        hdul.writeto(part)
    part.rename(path)


async def test_a_broken_reference_the_failing_step_never_read_leaves_a_dead_letter(
        tmp_path, broker, kit, unique_prefix):
    """The run fails for good in its saturation step (a whole superbias of the
    wrong shape), and the dark, read only by the later dark_current step,
    is cut short. stpipe's prefetch names the dark in the run's log; the
    failure is still the step's own, judged by the references that step
    read: a dead letter, not parked until someone repairs a dark the
    failure never touched."""
    cache = tmp_path / "crds"
    shutil.copytree(kit.crds_env["CRDS_PATH"], cache)
    for path in cache.rglob("*_superbias_*.fits"):
        _cropped(path, 100)
    darks = list(cache.rglob("*_dark_*.fits"))
    assert darks
    for path in darks:
        os.truncate(path, path.stat().st_size // 2)
    env = {**kit.crds_env, "CRDS_PATH": str(cache)}
    cfg = daemon_config(tmp_path, broker, unique_prefix, **FAST_PARKING)
    uncal = kit.uncal_files[0]
    with environ(env):
        async with running_daemon(cfg) as daemon:
            await anyio.to_thread.run_sync(lambda: deliver([uncal], cfg.inbox))
            seen: dict[str, object] = {}
            async with anyio.create_task_group() as race:  # a dead letter, or parked: the first
                async def lettered():
                    seen["letters"] = dead_letters(await wait_for(
                        cfg, ["deadletter"], dead_letters, timeout=180))
                    race.cancel_scope.cancel()

                async def parked():
                    await wait_parked(daemon, "crds_reference_corrupt")
                    seen["parked"] = True
                    race.cancel_scope.cancel()

                race.start_soon(lettered)
                race.start_soon(parked)
            after = scrape(daemon.ops.address)
    assert "parked" not in seen, "parked on the dark the failing step never read"
    letters = seen["letters"]
    assert metric(after, "calstream_parked_total") == 0
    (letter,) = letters
    assert letter["category"] == "permanent_failure"
    assert "broadcast" in letter["reason"], letter["reason"]
