"""The product store copied to another disk, the daemons restarted with
``products`` = the new root: the history on the topics (product events,
orders) names files under the old root. Real broker, real files, real jwst."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest

from calstream.daemon.deciders.replay_selection import Selection
from calstream.daemon.operations.replay import run_replay
from calstream.steps.fitsfile import file_digest
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.topics import contract

from .support import daemon_config, products, read_all, running_daemon, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def dead_letters(messages) -> list[contract.Message]:
    return [m for m in messages if isinstance(m, contract.Message) and m.type == "dead_letter"]


async def calibrated_then_moved(tmp_path: Path, broker: str, prefix: str, uncal: list[Path],
                                roles: tuple[str, ...] = ("watcher", "detector1")):
    """Detector1 under the old root (and with a planner, the stage-2 order
    sent but not run), the store copied (rsync -a) to the new one and the old
    disk gone. (config before the move, the new root)"""
    old, new = tmp_path / "old-disk" / "products", tmp_path / "new-disk" / "products"
    before = daemon_config(tmp_path, broker, prefix, products=old, roles=list(roles))
    async with running_daemon(before):
        await anyio.to_thread.run_sync(lambda: deliver(uncal, before.inbox))
        if "planner" in roles:
            await wait_for(before, ["work.stage2"], lambda ms: len(ms) >= len(uncal),
                           timeout=300)
        else:
            await wait_for(before, ["products"],
                           lambda ms: len(products(ms)) >= len(uncal), timeout=300)
    shutil.copytree(old, new, symlinks=True)  # what rsync -a makes
    shutil.rmtree(tmp_path / "old-disk")
    return before, new


async def test_a_moved_store_s_history_reaches_stage2_under_the_new_root(
        tmp_path, broker, kit, unique_prefix):
    uncal = kit.uncal_files[:1]
    exposure = parse_exposure_name(uncal[0].name).exposure_id
    before, new = await calibrated_then_moved(tmp_path, broker, unique_prefix, uncal)
    old = str(before.products)
    after = daemon_config(tmp_path, broker, unique_prefix, products=new,
                          products_moved_from=[old], roles=["planner", "stage2"])
    async with running_daemon(after):
        seen = await wait_for(after, ["products", "deadletter"],
                              lambda ms: products(ms, "stage2") or dead_letters(ms),
                              timeout=300)
    assert dead_letters(seen) == [], [d.get("reason") for d in dead_letters(seen)]
    (stage2,) = products(seen, "stage2")
    assert stage2["exposure_id"] == exposure
    for f in [*stage2["inputs"], *stage2["outputs"]]:
        assert f["path"].startswith(str(new) + "/"), f["path"]
        assert file_digest(Path(f["path"])) == f["digest"]
    # The history is the history: the detector1 event still names the old root.
    (detector1,) = products(await read_all(after, ["products"]))
    assert all(o["path"].startswith(old + "/") for o in detector1["outputs"])


async def test_an_order_sent_before_the_move_runs_on_the_files_under_the_new_root(
        tmp_path, broker, kit, unique_prefix):
    # The planner restarts from its ledgers and snapshot, which name the old
    # root, as the order it sent does: that order runs, once, and no other.
    before, new = await calibrated_then_moved(tmp_path, broker, unique_prefix,
                                              kit.uncal_files[:1],
                                              roles=("watcher", "detector1", "planner"))
    old = str(before.products)
    after = daemon_config(tmp_path, broker, unique_prefix, products=new,
                          products_moved_from=[old], roles=["planner", "stage2"])
    async with running_daemon(after):
        seen = await wait_for(after, ["products", "deadletter"],
                              lambda ms: products(ms, "stage2") or dead_letters(ms),
                              timeout=300)
    assert dead_letters(seen) == [], [d.get("reason") for d in dead_letters(seen)]
    (stage2,) = products(seen, "stage2")
    assert all(f["path"].startswith(str(new) + "/")
               for f in [*stage2["inputs"], *stage2["outputs"]])
    # A reprocessing from stage 2 selects the order sent before the move.
    report = await run_replay(after, source="stage2", selection=Selection(),
                              namespace="moved", crds_context=None, dry_run=True)
    assert (report["selected"], report["outside_roots"]) == (1, 0), report


async def test_a_copy_with_other_bytes_is_a_dead_letter_never_calibrated(
        tmp_path, broker, kit, unique_prefix):
    before, new = await calibrated_then_moved(tmp_path, broker, unique_prefix,
                                              kit.uncal_files[:1],
                                              roles=("watcher", "detector1", "planner"))
    rate = next(new.rglob("*_rate.fits"))
    with open(rate, "r+b") as f:  # one byte of the copy flipped: a failing disk's copy
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    after = daemon_config(tmp_path, broker, unique_prefix, products=new,
                          products_moved_from=[str(before.products)], roles=["stage2"])
    async with running_daemon(after):
        seen = await wait_for(after, ["products", "deadletter"],
                              lambda ms: products(ms, "stage2") or dead_letters(ms),
                              timeout=300)
    assert products(seen, "stage2") == []
    (dead,) = dead_letters(seen)
    assert rate.name in dead["reason"] and "moved" in dead["reason"], dead["reason"]


@pytest.mark.timeout(900)
async def test_a_stage3_order_sent_before_the_move_makes_its_mosaic_from_the_new_root(
        tmp_path, broker, kit, unique_prefix):
    # Its inputs and its association's members (jwst opens those; admission
    # reads their headers) name the old root.
    steps = {"calwebb_image3": {"tweakreg": {"abs_refcat": ""}}}  # offline: no Gaia
    old, new = tmp_path / "old-disk" / "products", tmp_path / "new-disk" / "products"
    before = daemon_config(tmp_path, broker, unique_prefix, products=old, steps=steps,
                           # The kit's module subarray: no header says the visit is
                           # complete, a quiet period closes it.
                           stage3_settle=1.0, stage3_quiet_period=5.0,
                           roles=["watcher", "detector1", "planner", "stage2"])
    async with running_daemon(before):
        # Two of the visit's dithers make a mosaic as well as four.
        await anyio.to_thread.run_sync(lambda: deliver(kit.uncal_files[:2], before.inbox))
        await wait_for(before, ["work.stage3"], lambda ms: ms, timeout=420)
    shutil.copytree(old, new, symlinks=True)
    shutil.rmtree(tmp_path / "old-disk")
    after = daemon_config(tmp_path, broker, unique_prefix, products=new, steps=steps,
                          products_moved_from=[str(old)], roles=["stage3"])
    async with running_daemon(after):
        seen = await wait_for(after, ["products", "deadletter"],
                              lambda ms: products(ms, "stage3") or dead_letters(ms),
                              timeout=420)
    assert dead_letters(seen) == [], [d.get("reason") for d in dead_letters(seen)]
    (mosaic,) = products(seen, "stage3")
    assert mosaic["outcome"] == "success", mosaic.get("reason")
    for f in [*mosaic["inputs"], *mosaic["outputs"]]:
        assert f["path"].startswith(str(new) + "/"), f["path"]
