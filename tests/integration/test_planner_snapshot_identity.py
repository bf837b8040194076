"""A planner snapshot is the state of one deployment's topics: one that came
from another deployment (a work dir restored from another's backup, copied
from staging, a deployment given a new topic prefix) is not this planner's
state, and must not be restored as if it were.

A real daemon with the planner role on the session's embedded tansu: one
deployment decides a program and snapshots; its snapshot is put in the work
dir of a second deployment (another topic prefix) that receives the same
program. The second one must order every exposure of it.
"""

from __future__ import annotations

import logging
import shutil

import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.planner_snapshots import snapshot_path
from calstream.topics.catalog import Topics
from tests.integration.support import (
    daemon_config,
    read_all,
    running_daemon,
    until,
    wait_for,
)
from tests.integration.test_planner_ha import product_event, publish, stage2_orders

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(150)]


async def test_a_snapshot_of_another_deployment_is_not_restored(
        tmp_path, broker, unique_prefix, caplog):
    other = daemon_config(tmp_path / "other", broker, unique_prefix + "other.",
                          roles=["planner"])
    events = [product_event(other.products, other.inbox, 1, n, 4) for n in range(1, 5)]
    async with running_daemon(other) as daemon:
        await publish(other, events)
        await wait_for(other, ["work.stage2"], lambda ms: len(stage2_orders(ms)) >= 4, 60)
        # Written once caught up after a rebuild (planner_restore.snapshot_due).
        await until(lambda: snapshot_path(other.work_dir).exists()
                    and daemon.planner.records_seen >= 4)
    ours = daemon_config(tmp_path / "ours", broker, unique_prefix, roles=["planner"])
    await kafka.create_topics(ours, Topics(ours.topic_prefix))
    snapshot_path(ours.work_dir).parent.mkdir(parents=True)
    shutil.copy(snapshot_path(other.work_dir), snapshot_path(ours.work_dir))
    # The same exposures (the same work ids), as this deployment's worker announces them.
    events = [product_event(ours.products, ours.inbox, 1, n, 4) for n in range(1, 5)]
    await publish(ours, events)
    caplog.set_level(logging.INFO, logger="calstream.planner")
    async with running_daemon(ours) as daemon:
        await until(lambda: daemon.planner is not None and daemon.planner.caught_up
                    and daemon.planner.records_seen >= 4)
        await wait_for(ours, ["work.stage2"], lambda ms: len(stage2_orders(ms)) >= 4, 30)
        orders = stage2_orders(await read_all(ours, ["work.stage2"]))
    assert sorted(o["exposure_id"] for o in orders) == sorted(e["exposure_id"] for e in events)
    said = [r.getMessage() for r in caplog.records]
    assert not any("state restored from the snapshot" in m for m in said)
    assert any("another deployment" in m for m in said), said
