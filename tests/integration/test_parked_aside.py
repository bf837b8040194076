"""Exposures of one mode parked on a missing reference do not stop the others.

Real broker, real jwst, real crds against a private copy of a kit's cache
with NIRCam's gain reference taken out: NIRCam imaging (detector1's jump
and ramp fitting need the gain) parks, a MIRI LRS exposure (MIRI's own
gain) can be calibrated. One worker: the detector1 consumer takes two
records at a time, so the two parked images would hold every place it has
if a parked item kept its own (as it did until session 28): the MIRI
exposure was then never fetched. Now each steps aside when it parks (doers/consumer_slots.py), the
two take turns at probing the fault (doers/park_gates.py), and both go on by
themselves once the gain is back; the MIRI product's previews are drawn meanwhile,
not held back by the parked runs as if they calibrated. A third image arriving while they are
parked parks after its first attempt: the quick retries would meet the
same fault that the others of its kind are parked on.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import anyio
import pytest

from calstream.steps.environment import environ
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec

from .support import daemon_config, metric, products, read_all, running_daemon, scrape, wait_for
from .test_parking import FAST_PARKING, dead_letters, exposure_id, until_unparked

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def _parked(daemon, count: int, timeout: float = 240.0) -> None:
    # Generous: a jwst warm-up, then each image's quick retries before it parks.
    with anyio.fail_after(timeout):
        while metric(scrape(daemon.ops.address), "calstream_parked_items",
                     stage="detector1") < count:
            await anyio.sleep(0.2)


async def test_parked_exposures_of_one_mode_do_not_stop_the_others(tmp_path, broker,
                                                                   unique_prefix, caplog):
    caplog.set_level("INFO", logger="calstream.stage")
    kit = build_kit(tmp_path / "kit", ProgramSpec(dithers=3), modes=("imaging", "lrs"))
    images = [f for f in kit.uncal_files if "_nrcb1_" in f.name]
    miri = [f for f in kit.uncal_files if "_mirimage_" in f.name][:1]
    assert len(images) == 3 and len(miri) == 1
    gain = next(Path(kit.crds_env["CRDS_PATH"]).rglob("jwst_nircam_gain_*.fits"))
    aside = tmp_path / gain.name
    gain.rename(aside)
    cfg = daemon_config(tmp_path, broker, unique_prefix, **FAST_PARKING)
    with environ(kit.crds_env):
        async with running_daemon(cfg) as daemon:
            assert daemon.consumers[0].capacity == 2  # one worker, one record ahead of it
            await anyio.to_thread.run_sync(lambda: deliver(images[:2], cfg.inbox))
            await _parked(daemon, 2)
            await anyio.to_thread.run_sync(lambda: deliver([images[2], *miri], cfg.inbox))
            msgs = await wait_for(cfg, ["products"],
                                  lambda ms: len(products(ms, "detector1")) >= 1, timeout=180)
            await _parked(daemon, 3)
            [calibrated] = products(msgs, "detector1")
            # Its previews too: they wait for calibrations (at most
            # preview_max_wait, 300 s here), not for runs parked at their gate.
            drawn = [p["path"] for p in calibrated.get("previews", [])]
            assert drawn
            with anyio.fail_after(120):
                while not all(Path(p).is_file() for p in drawn):
                    await anyio.sleep(0.2)
            now = scrape(daemon.ops.address)
            assert metric(now, "calstream_parked_items", stage="detector1") == 3
            assert metric(now, "calstream_parked_aside", stage="detector1") == 3
            assert metric(now, "calstream_in_flight", stage="detector1") == 0
            shutil.copy2(aside, gain)
            restored = time.monotonic()
            msgs = await wait_for(cfg, ["products"],
                                  lambda ms: len(products(ms, "detector1")) >= 4, timeout=180)
            recovery = time.monotonic() - restored
            await until_unparked(daemon)
            after = scrape(daemon.ops.address)
        letters = dead_letters(await read_all(cfg, ["deadletter"]))
    print(f"\nthree parked images: a MIRI exposure calibrated meanwhile; all three images out {recovery:.1f} s "
          "after the gain was put back")
    assert (calibrated["exposure_id"], calibrated["outcome"]) == (exposure_id(miri[0]), "success")
    assert sorted(p["exposure_id"] for p in products(msgs, "detector1")) == sorted(
        map(exposure_id, [*images, *miri]))
    assert all(p["outcome"] == "success" for p in products(msgs, "detector1"))
    assert not letters and metric(after, "calstream_parked_items") == 0
    assert metric(after, "calstream_parked_aside", stage="detector1") == 0
    said = [r.getMessage() for r in caplog.records]
    assert sum("the next record taken in its place" in m for m in said) == 3, said
    assert sum("resumed after" in m for m in said) == 3
    late = exposure_id(images[2])
    assert not [m for m in said if late in m and "; retry" in m], said
    assert [m for m in said if late in m and "parked on" in m]
