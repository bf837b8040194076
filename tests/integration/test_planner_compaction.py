"""A planner over its memory budget starts again from its own snapshot, in
the same process, and decides on as if nothing happened: every order once.

A real daemon with the planner role on the session's embedded tansu; the
budget is 1 MiB, the memory reading grows at every look, and snapshots are
taken every two records, so the planner compacts again and again while the
events come.
"""

from __future__ import annotations

import logging

import pytest

from tests.integration.support import (
    compact_at_every_snapshot,
    daemon_config,
    metric,
    read_all,
    running_daemon,
    scrape,
    until,
    wait_for,
)
from tests.integration.test_planner_ha import product_event, publish, stage2_orders

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(150)]


async def test_a_planner_over_its_memory_budget_starts_again_and_sends_every_order_once(
        tmp_path, broker, unique_prefix, monkeypatch, caplog):
    compact_at_every_snapshot(monkeypatch)
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"], planner_memory_mb=1)
    first = [product_event(cfg.products, cfg.inbox, 1, n, 4) for n in range(1, 5)]
    second = [product_event(cfg.products, cfg.inbox, 2, n, 4) for n in range(1, 5)]
    caplog.set_level(logging.INFO, logger="calstream.planner")
    async with running_daemon(cfg) as daemon:
        def compactions() -> float:
            return metric(scrape(daemon.ops.address), "calstream_planner_compactions_total")

        await publish(cfg, first, pause=0.3)
        await until(lambda: compactions() >= 1)
        await publish(cfg, second, pause=0.3)  # decided by a planner started from a snapshot
        await until(lambda: compactions() >= 2)
        await until(lambda: daemon.planner is not None and daemon.planner.caught_up
                     and len(daemon.planner.state.exposures) == 8)
        # An exposure is in the state before its order is acknowledged: the
        # orders are read once the last one is out, not at this instant.
        await wait_for(cfg, ["work.stage2"],
                       lambda ms: len(stage2_orders(ms)) >= len(first + second), timeout=120)
        orders = stage2_orders(await read_all(cfg, ["work.stage2"]))
        assert daemon.planner.memory_budget == 2**20
    # Every exposure's order once: none lost and none sent again by a planner
    # that started from a snapshot (it knows what was sent before it).
    assert sorted(o["exposure_id"] for o in orders) == sorted(
        e["exposure_id"] for e in first + second)
    said = [r.getMessage() for r in caplog.records]
    assert any("starting again from that snapshot" in m for m in said)
    assert any("state restored from the snapshot" in m for m in said)  # not a rebuild
