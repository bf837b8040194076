"""The planner survives what raises outside any record: a tick's decision, an
order the encoding refuses, its status.

Faults are injected into a real planner (a daemon with the planner role on
the session's embedded tansu): its deciders are pure and their inputs
checked, so no valid input makes these happen today, which is why they are
injected. Before, each ended the planner's task: the daemon would restart,
rebuild and meet the same tick again.
"""

from __future__ import annotations

import json
import urllib.request

import anyio
import pytest

from calstream.daemon.deciders import planner_state
from calstream.daemon.deciders.planner_records import Emit
from calstream.daemon.doers import planner_status
from calstream.topics import contract
from calstream.topics.catalog import Topics
from tests.integration.support import daemon_config, metric, running_daemon, scrape, wait_for
from tests.integration.test_planner_ha import product_event, publish

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(120)]


def refused_order(key: str) -> Emit:
    """A stage-2 order its schema refuses (no event id, association or inputs,
    an exposure id that is a number): its dead letter is still written."""
    return Emit("work.stage2", key, contract.Message("work_order", {
        "schema": "calstream.work_order", "schema_version": contract.SCHEMA_VERSION,
        "emitted_at": contract.utc_now(), "stage": "stage2", "product_name": key,
        "exposure_id": 7}))


async def test_a_failing_tick_a_refused_order_and_a_failing_status_do_not_stop_the_planner(
        tmp_path, broker, unique_prefix, monkeypatch):
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"])
    products, inbox = cfg.products, cfg.inbox
    ticks = {"n": 0}
    real_tick = planner_state.PlannerState.tick

    def tick(self, now):
        ticks["n"] += 1
        if ticks["n"] <= 3:
            raise RuntimeError("injected: a decision of the tick raised")
        out = real_tick(self, now)
        if ticks["n"] == 4:  # a good order beside a refused one: the good one still goes
            return [refused_order("jw-refused"), *out,
                    Emit("work.stage2", "jwgood", product_order(cfg))]
        return out

    def broken_view(planner):
        raise KeyError("injected: the status cannot be built")

    monkeypatch.setattr(planner_state.PlannerState, "tick", tick)
    monkeypatch.setattr(planner_status, "view", broken_view)
    async with running_daemon(cfg) as daemon:
        await publish(cfg, [product_event(products, inbox, 1, 1, 2)])
        # The planner still takes records after the faults and the refusal.
        with anyio.fail_after(60):
            while ticks["n"] < 6:
                await anyio.sleep(0.2)
        await publish(cfg, [product_event(products, inbox, 1, 2, 2)])
        seen = await wait_for(cfg, ["work.stage2", "deadletter"], lambda ms: len(
            [m for m in ms if isinstance(m, contract.Message) and m.type == "work_order"]) >= 3
            and any(isinstance(m, contract.Message) and m.type == "dead_letter" for m in ms),
            timeout=60)
        orders = [m for m in seen if isinstance(m, contract.Message) and m.type == "work_order"]
        letters = [m for m in seen if isinstance(m, contract.Message) and m.type == "dead_letter"]
        # The good order beside the refused one went, and both exposures' own.
        assert sorted(o["product_name"] for o in orders) == sorted(
            ["jwgood", product_event(products, inbox, 1, 1, 2)["exposure_id"],
             product_event(products, inbox, 1, 2, 2)["exposure_id"]])
        assert [(d["stage"], d["category"]) for d in letters] == [("planner", "invalid_message")]
        assert "'jw-refused'" in letters[0]["reason"] and "cannot be sent" in letters[0]["reason"]
        samples = scrape(daemon.ops.address)
        assert metric(samples, "calstream_planner_faults_total", part="tick") == 3
        assert metric(samples, "calstream_planner_faults_total", part="status") >= 3
        assert daemon.planner.caught_up
        # Every product event decided: nothing left on its topics, in the
        # metrics and in /planner (the faults above did not stop the measure).
        # The dead letters too: the planner reads its stage-2 orders' failures.
        names = [Topics(cfg.topic_prefix).name(t)
                 for t in ("products", "pointing", "plans", "deadletter")]
        with anyio.fail_after(10):
            while not all(("calstream_planner_lag_records", (("topic", n),)) in samples
                          for n in names):
                await anyio.sleep(0.2)
                samples = scrape(daemon.ops.address)
        assert [metric(samples, "calstream_planner_lag_records", topic=n) for n in names] == \
            [0, 0, 0, 0]
        with urllib.request.urlopen(f"http://{daemon.ops.address}/planner", timeout=5) as r:
            assert json.loads(r.read())["behind"] == dict.fromkeys(names, 0)


def product_order(cfg) -> contract.Message:
    """A valid stage-2 order, as the planner makes one (taken from a real decision)."""
    state = planner_state.PlannerState(companion_wait=0.0)
    event = product_event(cfg.products, cfg.inbox, 2, 1, 1)
    [emit] = [e for e in state.observe(event, 0.0) if e.topic == "work.stage2"]
    emit.message.body["product_name"] = "jwgood"
    return emit.message


async def test_a_kept_plan_it_cannot_use_is_dead_lettered_at_start(tmp_path, broker, unique_prefix):
    """A plan on the plans topic that its schema accepts but the planner
    cannot use (a header value that is a list: no FITS value) was refused
    when it came, but the restore of the next start read it again unguarded:
    Plan.from_json raised out of the start, at every start. Found by the
    door fuzz (tests/unit/test_door_fuzz_planner.py)."""
    from calstream.daemon.doers import kafka
    from calstream.daemon.doers.message_sender import send_messages
    from calstream.topics.catalog import Topics

    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"])
    exposure = "jw01234001001_02101_00001_nrcb1"
    forged = contract.build(
        "plan", contract.event_id("plan", "forged"), plan_id="f" * 64, source="forged",
        programs=["01234"], exposures=[{"exposure_id": exposure, "candidates": ["o001"],
                                        "header": {"FILTER": ["F150W"]}}])
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    await send_messages(cfg, topics.name("plans"), [("01234", forged)])
    async with running_daemon(cfg) as daemon:
        with anyio.fail_after(60):
            while not (daemon.planner and daemon.planner.caught_up):
                await anyio.sleep(0.2)
        seen = await wait_for(cfg, ["deadletter"], lambda ms: any(
            isinstance(m, contract.Message) and "cannot be used" in m["reason"] for m in ms),
            timeout=60)
        [letter] = [m for m in seen if isinstance(m, contract.Message)]
        assert (letter["stage"], letter["category"]) == ("planner", "bad_input")
        assert "ffffffffffff" in letter["reason"] and "FILTER" in letter["reason"]
