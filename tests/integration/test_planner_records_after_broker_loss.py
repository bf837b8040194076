"""The plans and holds the planner keeps, back on their topics after the
embedded broker restarted empty, whatever the planner's role was then.

Before, the daemon re-published them at the restart only if its planner
was ``active`` at that moment: one whose publishing was paused (its lease
unconfirmed), or taking over (the restart also drops the lease's group),
sent nothing then, and nobody sent them later: `holds list`, `holds
release`, `plan list` and a standby's state read topics without them.
"""

from __future__ import annotations

import collections
import json

import anyio
import pytest

from calstream.daemon.deciders.holds import hold_record
from calstream.daemon.doers import kafka
from calstream.daemon.doers.planner_leadership import Leadership
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.operations.cli.plans import plan_message
from calstream.daemon.operations.config import load
from calstream.daemon.runtime import Daemon
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import until

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(180)]

HELD = "jw01234001001_02101_00001_nrcb1"


def kept_hold() -> dict:
    return hold_record(HELD, dict(exposure_id=HELD, program="01234", state="held",
                                  since="2026-01-01T00:00:00Z", digest="sha256:" + "a" * 64,
                                  reason="ENGQLPTG=PLANNED", release=None),
                       "sha256:" + "a" * 64, {}).message.body


async def on_topics(cfg) -> collections.Counter:
    """Each plan and hold record on the topics now (read without writing
    to them: the planner reads the plans topic)."""
    found = collections.Counter()
    for kind, logical in (("plan", "plans"), ("hold", "holds")):
        for r in await kafka.read_to_end(cfg, Topics(cfg.topic_prefix).name(logical)):
            found[kind, contract.decode(r.value, expected=kind).event_id] += 1
    return found


async def test_a_planner_not_active_at_the_restart_puts_its_plans_and_holds_back_once(
        tmp_path, monkeypatch):
    cfg = load(None, env={}, flags={
        "work_dir": tmp_path / "work", "roles": ["planner"], "planner_lease": True,
        "metrics_address": "127.0.0.1:0", "fast_group_timing": True, "settle_seconds": 0.2,
        "poll_interval": 0.2, "retry_backoff": 0.2})
    manifest = tmp_path / "plan.json"
    manifest.write_text(json.dumps({"exposures": [{"exposure_id": HELD,
                                                   "candidates": ["o001"]}]}))
    plan, hold = plan_message(manifest, "test").body, kept_hold()
    ledger = PlannerLedger(cfg.work_dir)  # an earlier run's
    ledger.keep("plans", plan)
    ledger.keep("holds", hold)
    expected = {("plan", plan["event_id"]): 1, ("hold", hold["event_id"]): 1}
    daemon = Daemon(cfg)
    daemon.start_broker()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await until(lambda: daemon.planner.caught_up
                        and daemon.leadership.describe()["role"] == "active", timeout=120)
            assert await on_topics(daemon.cfg) == expected  # the start put them back

            # The restart comes while the planner is not active (here: said to
            # be paused to whoever asks; its lease's group goes with the broker
            # anyway, so it is soon taking over for real).
            describe = Leadership.describe

            def not_active(self):
                return {**describe(self), "role": "paused"}
            monkeypatch.setattr(Leadership, "describe", not_active)
            supervisor = daemon.supervisor
            daemon.broker.process.kill()
            await until(lambda: supervisor.restarts == 1 and supervisor.last_recovery,
                        timeout=60)
            monkeypatch.setattr(Leadership, "describe", describe)

            # Active again (the lease's group was lost with the broker): it
            # puts back what the topics lack, once.
            await until(lambda: daemon.leadership.describe()["role"] == "active", timeout=60)
            with anyio.fail_after(60):
                while set(await on_topics(daemon.cfg)) != set(expected):
                    await anyio.sleep(0.5)
            await anyio.sleep(2)  # anything sent twice is on the topics by now
            assert await on_topics(daemon.cfg) == expected
            tg.cancel_scope.cancel()
    finally:
        daemon.stop_broker()


async def test_an_external_broker_back_empty_gets_the_plans_and_holds_back_once(
        tmp_path, unique_prefix):
    """The same for a broker the daemon does not embed (another daemon's, a
    Kafka node on a fresh volume): its return put back the product events
    and dead letters, and the plans and holds only at the next start."""
    from calstream.daemon.doers.embedded_broker import EmbeddedBroker

    from .support import daemon_config, running_daemon

    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"])
        manifest = tmp_path / "plan.json"
        manifest.write_text(json.dumps({"exposures": [{"exposure_id": HELD,
                                                       "candidates": ["o001"]}]}))
        plan, hold = plan_message(manifest, "test").body, kept_hold()
        ledger = PlannerLedger(cfg.work_dir)
        ledger.keep("plans", plan)
        ledger.keep("holds", hold)
        expected = {("plan", plan["event_id"]): 1, ("hold", hold["event_id"]): 1}
        async with running_daemon(cfg) as daemon:
            await until(lambda: daemon.planner is not None and daemon.planner.caught_up)
            assert await on_topics(cfg) == expected
            # Its ends seen once: a restart between two looks is a loss (broker_records.py).
            await until(lambda: daemon.supervisor.records_checked >= 1, timeout=30)
            own.restart()  # empty, the same address
            with anyio.fail_after(60):
                while set(await on_topics(cfg)) != set(expected):
                    await anyio.sleep(0.5)
            await anyio.sleep(2)
            assert await on_topics(cfg) == expected
