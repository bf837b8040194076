"""The planner's own disk full: it parks and resumes by itself.

The planner writes three things under its work directory: the plans and the
holds it keeps (doers/planner_ledger.py) and its snapshot. With that
directory on a small full tmpfs, a plan, a held exposure and the first
snapshot all meet ENOSPC; the planner must neither stop (taking the daemon
with it) nor dead-letter anything, and must keep all three once space is
freed. Synthetic product events (no jwst run), the session's real broker.
"""

from __future__ import annotations

import json

import anyio
import pytest

from calstream.daemon.doers import planner_snapshots
from calstream.daemon.operations.cli.plans import plan_message, publish_plan
from calstream.steps.synthetic.headers import exposure_id

from .support import daemon_config, metric, read_all, running_daemon, scrape, wait_for
from .test_parking import dead_letters, fill, small_tmpfs
from .test_planner_ha import product_event, publish

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(180)]


def planned_pointing(event):
    """The same product event, its exposure's pointing PLANNED: the planner holds it."""
    header = {**event["header"], "ENGQLPTG": "PLANNED"}
    return type(event)(event.type, {**event.body, "header": header, "pointing_quality": "PLANNED",
                                    "pointing_provisional": True})


def parked_total(daemon) -> float:
    return metric(scrape(daemon.ops.address), "calstream_parked_total", stage="planner",
                  cause="disk_full")


async def until(condition, timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.2)


def free(work) -> None:
    for filler in work.glob("filler*.bin"):
        filler.unlink()


async def test_a_full_planner_disk_parks_the_planner_and_it_resumes(tmp_path, broker,
                                                                    unique_prefix):
    with small_tmpfs(tmp_path / "work", "16m") as work:
        cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"], work_dir=work,
                            max_attempts=2, retry_backoff=0.1, park_recheck_seconds=1.0)
        held, plain = (product_event(cfg.products, cfg.inbox, 4242, n, 2) for n in (1, 2))
        held = planned_pointing(held)
        manifest = tmp_path / "plan.json"
        manifest.write_text(json.dumps({"exposures": [
            {"exposure_id": exposure_id(e["header"]), "candidates": ["o001"]}
            for e in (held, plain)]}))
        plan = plan_message(manifest, "test")
        kept = work / "planner"
        async with running_daemon(cfg) as daemon:
            await until(lambda: daemon.planner and daemon.planner.caught_up)
            await anyio.to_thread.run_sync(fill, work)
            # The first product event makes the first snapshot due: it cannot
            # be written, and the planner sends its order all the same.
            await publish(cfg, [plain])
            await wait_for(cfg, ["work.stage2"], lambda ms: any(
                getattr(m, "type", "") == "work_order" for m in ms), timeout=60)
            await until(lambda: parked_total(daemon) >= 1)
            # A PLANNED exposure: its hold must be kept before it is sent.
            await publish(cfg, [held])
            await until(lambda: parked_total(daemon) >= 2)
            free(work)
            await until(lambda: (kept / "holds" / f"{held['exposure_id']}.json").is_file()
                        and planner_snapshots.snapshot_path(work).is_file())
            # Full again: a plan must be kept too.
            await anyio.to_thread.run_sync(fill, work)
            await publish_plan(cfg, plan)
            await until(lambda: parked_total(daemon) >= 3)
            free(work)
            await until(lambda: (kept / "plans" / f"{plan['plan_id']}.json").is_file())
            await until(lambda: metric(scrape(daemon.ops.address), "calstream_parked_items") == 0)
            assert plan["plan_id"] in daemon.planner.plans
            assert held["exposure_id"] in daemon.planner.holds
            samples = scrape(daemon.ops.address)
        assert metric(samples, "calstream_dead_letters_total") == 0
        assert not dead_letters(await read_all(cfg, ["deadletter"]))
        assert not list(kept.glob(".*.tmp")), "a failed write left its temporary file"
