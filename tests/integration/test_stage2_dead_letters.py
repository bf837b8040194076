"""A stage-2 order dead-lettered: the planner reads it on the real broker and
its stage-3 candidate stops waiting for that member (stage3_stage2_wait)
after the usual quiet period, degraded, naming the failure. A forged dead
letter (an order the planner never sent) changes nothing. Synthetic product
events (no jwst run), the session's broker, the planner role alone."""

from __future__ import annotations

import pytest

from calstream.daemon.doers import kafka
from calstream.topics import contract
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import original_record

from .support import daemon_config, running_daemon, until, wait_for
from .test_planner_ha import product_event, publish, stage2_orders

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(240)]

QUIET = 2.0


async def send_dead_letter(cfg, order: contract.Message, reason: str) -> None:
    """What a stage-2 consumer publishes when it gives the order up."""
    topics = Topics(cfg.topic_prefix)
    value = contract.encode(order)
    letter = contract.build(
        "dead_letter", contract.event_id("dead_letter", order.event_id, reason),
        category="permanent_failure", reason=reason, stage="stage2", attempts=3,
        exposure_id=order["product_name"],
        original=original_record(topic=topics.name("work.stage2"), partition=0, offset=0,
                                 key=order["product_name"].encode(), value=value,
                                 timestamp_ms=1))
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        await producer.send_and_wait(topics.name("deadletter"), contract.encode(letter),
                                     key=order["product_name"].encode())
    finally:
        await producer.stop()


def stage3_orders(messages) -> list[contract.Message]:
    return [m for m in messages if isinstance(m, contract.Message) and m.type == "work_order"]


async def test_a_dead_lettered_stage2_order_ends_the_wait_and_a_forged_one_does_not(
        tmp_path, broker, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"],
                        stage3_settle=1.0, stage3_quiet_period=QUIET)
    first, second = (product_event(cfg.products, cfg.inbox, 4646, n, 2) for n in (1, 2))
    async with running_daemon(cfg) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        await publish(cfg, [first, second,
                            product_event(cfg.products, cfg.inbox, 4646, 1, 2, stage="stage2")])
        orders = await wait_for(cfg, ["work.stage2"], lambda ms: len(stage2_orders(ms)) == 2)
        [failing] = [o for o in stage2_orders(orders)
                     if o["product_name"] == second["exposure_id"]]
        # A forged dead letter: an order of that exposure the planner never sent.
        forged = contract.Message("work_order", {**failing.body, "work_id": "f" * 64})
        await send_dead_letter(cfg, forged, "FORGED")
        state = daemon.planner.state
        [cand] = state.stage3.candidates.values()
        dead = Topics(cfg.topic_prefix).name("deadletter")
        # Decided (the planner's position is past it): the member is still in
        # flight, so the candidate waits up to stage3_stage2_wait (6 h).
        await until(lambda: sum(o for (t, _), o in daemon.planner.positions.items()
                                if t == dead) >= 1)
        assert cand.in_flight == {second["exposure_id"]} and cand.is_open
        await send_dead_letter(cfg, failing, "calwebb_image2 failed: boom")
        done = await wait_for(cfg, ["work.stage3"], lambda ms: stage3_orders(ms), timeout=60)
    [order] = stage3_orders(done)
    assert f"stage 2 failed: {second['exposure_id']} (calwebb_image2 failed: boom)" \
        in order["degraded"]
    assert "FORGED" not in order["degraded"] and len(order["inputs"]) == 1


async def test_a_redriven_stage2_order_is_in_flight_again(tmp_path, broker, unique_prefix):
    """`calstream deadletters redrive` of a failed stage-2 order: the planner
    counted the member failed still, and its candidate would close degraded
    on the quiet period while the redriven order ran. The redrive puts the
    letter back, marked, on the topic the planner reads: in flight again."""
    import anyio

    from .support import cli

    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"],
                        stage3_settle=1.0, stage3_quiet_period=600.0)
    first, second = (product_event(cfg.products, cfg.inbox, 4747, n, 2) for n in (1, 2))
    dead = Topics(cfg.topic_prefix).name("deadletter")
    async with running_daemon(cfg) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        await publish(cfg, [first, second,
                            product_event(cfg.products, cfg.inbox, 4747, 1, 2, stage="stage2")])
        orders = await wait_for(cfg, ["work.stage2"], lambda ms: len(stage2_orders(ms)) == 2)
        [failing] = [o for o in stage2_orders(orders)
                     if o["product_name"] == second["exposure_id"]]
        await send_dead_letter(cfg, failing, "calwebb_image2 failed: boom")
        [cand] = daemon.planner.state.stage3.candidates.values()
        await until(lambda: not cand.in_flight)  # its failure read: not in flight
        [letter] = await kafka.read_to_end(cfg, dead)
        redriven = await anyio.to_thread.run_sync(
            cli, cfg, "deadletters", "redrive", f"{letter.partition}:{letter.offset}",
            "--reason", "CRDS fixed", "--by", "night")
        assert redriven.returncode == 0 and "redriven 1" in redriven.stdout, redriven
        await until(lambda: cand.in_flight == {second["exposure_id"]})
        assert cand.is_open
