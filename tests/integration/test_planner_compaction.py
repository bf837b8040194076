"""A planner over its memory budget starts again from its own snapshot, in
the same process, and decides on as if nothing happened: every order once.

A real daemon with the planner role on the session's embedded tansu; the
budget is 1 MiB, the memory reading grows at every look, and snapshots are
taken every two records, so the planner compacts again and again while the
events come.
"""

from __future__ import annotations

import logging

import anyio
import pytest

from calstream.daemon.deciders import planner_memory
from calstream.daemon.doers import planner_restore
from tests.integration.support import daemon_config, metric, read_all, running_daemon, scrape
from tests.integration.test_planner_ha import product_event, publish, stage2_orders

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(150)]


async def _until(condition, timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.2)


async def test_a_planner_over_its_memory_budget_starts_again_and_sends_every_order_once(
        tmp_path, broker, unique_prefix, monkeypatch, caplog):
    monkeypatch.setattr(planner_restore, "SNAPSHOT_EVERY_RECORDS", 2)
    monkeypatch.setattr(planner_memory, "MIN_RECORDS", 1)
    # Memory that grows at every reading: a planner that started again from
    # its snapshot uses less than before, by how much depends on the
    # allocator, and the rule (tests/unit/test_planner_memory.py) waits for
    # growth; here every snapshot must be followed by a compaction.
    readings = iter(range(2**30, 2**40, 2**20))
    monkeypatch.setattr(planner_restore, "resident_in_use_bytes", lambda: next(readings))
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"], planner_memory_mb=1)
    first = [product_event(cfg.products, cfg.inbox, 1, n, 4) for n in range(1, 5)]
    second = [product_event(cfg.products, cfg.inbox, 2, n, 4) for n in range(1, 5)]
    caplog.set_level(logging.INFO, logger="calstream.planner")
    async with running_daemon(cfg) as daemon:
        def compactions() -> float:
            return metric(scrape(daemon.ops.address), "calstream_planner_compactions_total")

        await publish(cfg, first, pause=0.3)
        await _until(lambda: compactions() >= 1)
        await publish(cfg, second, pause=0.3)  # decided by a planner started from a snapshot
        await _until(lambda: compactions() >= 2)
        await _until(lambda: daemon.planner is not None and daemon.planner.caught_up
                     and len(daemon.planner.state.exposures) == 8)
        orders = stage2_orders(await read_all(cfg, ["work.stage2"], timeout=10))
        assert daemon.planner.memory_budget == 2**20
    # Every exposure's order once: none lost and none sent again by a planner
    # that started from a snapshot (it knows what was sent before it).
    assert sorted(o["exposure_id"] for o in orders) == sorted(
        e["exposure_id"] for e in first + second)
    said = [r.getMessage() for r in caplog.records]
    assert any("starting again from that snapshot" in m for m in said)
    assert any("state restored from the snapshot" in m for m in said)  # not a rebuild
