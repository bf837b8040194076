"""A plan loaded while the planner was down (or read, and its orders not
yet sent, when a kill -9 came before the next snapshot) lies in the plans
topic's tail after the snapshot's offset. The restore reads that tail and
loads the plan into the restored state, whose exposures may already
complete the plan's candidates: loading it decides their stage-3 orders at
once. Before, the restore dropped what loading decided: the order was never
sent (no tick decides it again; a rebuild, whose state has no exposure yet
when it loads the plans, ordered it). Now it is sent once the planner has
caught up, unless its product turns up meanwhile.
"""

from __future__ import annotations

import json

import pytest

from calstream.daemon.doers import kafka, planner_restore
from calstream.daemon.operations.cli.plans import plan_message
from calstream.daemon.operations.config import load
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import daemon_config, running_daemon, until, wait_for
from .test_planner_ha import product_event, publish

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(150)]

PLAN_FIELDS = ("INSTRUME", "EXP_TYPE", "FILTER", "PUPIL", "SUBARRAY", "TARGETID", "NEXPOSUR")


def stage3_products(messages) -> set[str]:
    return {m["product_name"] for m in messages if isinstance(m, contract.Message)
            and m.type == "work_order" and m.get("stage") == "stage3"}


async def test_a_plan_in_the_tail_after_the_snapshot_orders_what_it_completes(
        tmp_path, broker, unique_prefix, monkeypatch):
    monkeypatch.setattr(planner_restore, "SNAPSHOT_EVERY_RECORDS", 1)  # after each fetch
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"], stage3_settle=0.5,
                        stage3_quiet_period=0.5, stage3_stage2_wait=0.5)
    await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
    # Two observations: a plan's candidate (c1NNN) is jwst's only across
    # observations; within one it would be the observation's own (oNNN).
    events = [product_event(cfg.products, cfg.inbox, 7, n, 3, stage=stage, observation=o)
              for o in (1, 2) for n in (1, 2, 3) for stage in ("detector1", "stage2")]
    async with running_daemon(cfg) as daemon:
        await publish(cfg, events)
        # The observations' own mosaics: every member calibrated, the quiet period over.
        await wait_for(cfg, ["work.stage3"], lambda ms: len(stage3_products(ms)) >= 2, 60)
        await until(lambda: daemon.planner.records_seen == len(events)
                    and daemon.planner.snapshot_written == len(events))

    # While it is down, an operator loads a plan: one more mosaic of the same six.
    manifest = tmp_path / "plan.json"
    manifest.write_text(json.dumps({"exposures": [
        {"exposure_id": e["exposure_id"], "candidates": ["c1000"],
         "header": {k: e["header"][k] for k in PLAN_FIELDS}}
        for e in events if e["stage"] == "detector1"]}))
    plan = plan_message(manifest, "test")
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        await producer.send_and_wait(Topics(cfg.topic_prefix).name("plans"),
                                     contract.encode(plan), key=b"00007")
    finally:
        await producer.stop()

    again = load(None, env={}, flags={**{k: getattr(cfg, k) for k in (
        "work_dir", "kafka_bootstrap", "topic_prefix", "group_prefix", "products", "inbox")},
        "roles": ["planner"], "metrics_address": "127.0.0.1:0", "fast_group_timing": True,
        "stage3_settle": 0.5, "stage3_quiet_period": 0.5, "stage3_stage2_wait": 0.5})
    async with running_daemon(again) as daemon:
        await until(lambda: daemon.planner is not None and daemon.planner.caught_up)
        assert daemon.planner.restored_from is not None  # from the snapshot and its tail
        orders = await wait_for(cfg, ["work.stage3"], lambda ms: any(
            "-c1000_" in p for p in stage3_products(ms)), 60)
    assert sum("-c1000_" in p for p in stage3_products(orders)) == 1
