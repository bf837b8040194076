"""A standby planner over its memory budget compacts as the active one does,
with decisions withheld, and a later takeover still sends every order once.

The active planner is a `calstream run --role planner` process; the standby
a daemon in this process (its memory reading grows at every look, a budget
of 1 MiB, a snapshot every two records, as in test_planner_compaction.py),
both on the session's embedded tansu. The active planner is stopped
(SIGSTOP) so that everything the standby decides meanwhile stays withheld,
the standby compacts with those withheld, then the active one is killed and
the standby takes over.
"""

from __future__ import annotations

import collections
import logging
import signal

import anyio
import pytest

from calstream.daemon.doers import kafka, planner_compaction, planner_restore
from calstream.topics.catalog import Topics
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
from tests.integration.test_planner_ha import PlannerProcess, product_event, publish, stage2_orders

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(240)]

# Long enough for the standby to compact while the stopped active planner
# still holds the lease (the takeover waits for it to be expelled).
LEASE_TIMEOUT = 8


async def test_a_standby_compacts_with_decisions_withheld_and_takes_over_sending_each_once(
        tmp_path, broker, unique_prefix, monkeypatch, caplog):
    compact_at_every_snapshot(monkeypatch)
    compacted_with = []  # (role, decisions withheld) at each compaction of the standby daemon
    compact = planner_compaction.compact_when_due

    def recording(planner) -> None:
        try:
            compact(planner)
        except planner_compaction.Compaction as c:
            compacted_with.append((c.role, len(planner.standby.withheld)))
            raise

    monkeypatch.setattr(planner_restore, "compact_when_due", recording)
    monkeypatch.setenv("CALSTREAM_PLANNER_LEASE_TIMEOUT", str(LEASE_TIMEOUT))  # the process's
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"], planner_lease=True,
                        planner_lease_timeout=LEASE_TIMEOUT, planner_memory_mb=1)
    await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
    first = [product_event(cfg.products, cfg.inbox, 1, n, 6) for n in range(1, 7)]
    second = [product_event(cfg.products, cfg.inbox, 2, n, 6) for n in range(1, 7)]
    caplog.set_level(logging.INFO, logger="calstream.planner")
    active = PlannerProcess(cfg, tmp_path / "planner-a")
    try:
        with anyio.fail_after(90):
            await active.until("active")
        async with running_daemon(cfg) as standby:
            def role() -> str:
                return standby.leadership.describe()["role"]

            def compactions() -> float:
                return metric(scrape(standby.ops.address), "calstream_planner_compactions_total",
                              leadership="standby")

            await until(lambda: standby.planner is not None and standby.planner.caught_up
                         and role() == "standby")
            with anyio.fail_after(60):  # the rebalance the standby's joining made is over
                await active.until("active")
            # Both planners decide, the active one publishes; the standby
            # compacts, starting again from its snapshot, and forgets what
            # it reads published (while following, or at its restore).
            await publish(cfg, first, pause=0.5)
            await wait_for(cfg, ["work.stage2"], lambda m: len(stage2_orders(m)) >= 6, 60)
            await until(lambda: compactions() >= 1)
            # The active planner stops deciding: the standby withholds all it decides now.
            active.proc.send_signal(signal.SIGSTOP)
            await publish(cfg, second, pause=0.2)
            await until(lambda: any(r == "standby" and n for r, n in compacted_with))
            active.proc.send_signal(signal.SIGKILL)
            active.proc.wait()
            await until(lambda: role() == "active" and not standby.planner.standby.withheld
                         and len(standby.planner.state.exposures) == 12, 90)
            # Read once every exposure's order is out, not at the instant the
            # state holds them all (an exposure is there before its order is sent).
            await wait_for(cfg, ["work.stage2"], lambda ms: len(
                {o["work_id"] for o in stage2_orders(ms)}) >= len(first + second), timeout=120)
            orders = stage2_orders(await read_all(cfg, ["work.stage2"]))
            said = [r.getMessage() for r in caplog.records]
    finally:
        active.proc.send_signal(signal.SIGCONT)  # a stopped process takes no SIGTERM
        active.stop()
    print(f"compactions (role, decisions withheld): {compacted_with}")
    # Every exposure's order once: none the stopped planner never sent lost,
    # none sent again by a standby that restarted from its snapshot.
    counts = collections.Counter(o["work_id"] for o in orders)
    assert set(counts.values()) == {1}, [w for w, c in counts.items() if c > 1]
    assert sorted(o["product_name"] for o in orders) == sorted(
        e["exposure_id"] for e in first + second)
    assert any("state restored from the snapshot" in m for m in said)  # not a rebuild
    assert any("now the active planner" in m for m in said)
