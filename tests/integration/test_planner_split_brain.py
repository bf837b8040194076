"""Two planners under the planner lease, the active one frozen (SIGSTOP, a VM
paused) for longer than the lease's session, then let go on (SIGCONT).

Meanwhile the standby took the lease over and ordered what arrived. The
frozen one, resumed, reads the same records at once: it must not order them
too (split brain: every such order sent twice).
"""

from __future__ import annotations

import collections
import signal

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.topics import contract
from calstream.topics.catalog import Topics
from tests.integration.support import daemon_config, wait_for
from tests.integration.test_planner_ha import (
    PlannerProcess,
    product_event,
    publish,
    stage2_orders,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(240)]


async def test_a_planner_frozen_past_its_lease_sends_nothing_once_let_go_on(
        broker, tmp_path, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
    events = [product_event(cfg.products, cfg.inbox, p, n, 20)
              for p in (1, 2, 3) for n in range(1, 21)]
    first, rest = events[:20], events[20:]
    planners = [PlannerProcess(cfg, tmp_path / f"planner-{x}") for x in "ab"]
    try:
        with anyio.fail_after(180):
            while True:
                views = [await p.view() for p in planners]
                roles = sorted(v["leadership"]["role"] for v in views if v.get("caught_up"))
                if roles == ["active", "standby"]:
                    break
                await anyio.sleep(0.2)
        a, b = sorted(planners, key=lambda p: views[planners.index(p)]["leadership"]["role"])
        await publish(cfg, first)
        await wait_for(cfg, ["work.stage2"], lambda m: len(stage2_orders(m)) >= len(first), 180)

        a.proc.send_signal(signal.SIGSTOP)  # alive, silent: expelled after its session
        try:
            with anyio.fail_after(180):
                await b.until("active")
            await publish(cfg, rest)
            await wait_for(cfg, ["work.stage2"], lambda m: len(
                {o["work_id"] for o in stage2_orders(m)}) >= len(events), 180)
        finally:
            a.proc.send_signal(signal.SIGCONT)
        # The resumed planner reads what arrived while it was frozen, learns it
        # lost the lease and stands by, having read every order B sent.
        with anyio.fail_after(120):
            while True:
                view = await a.view()
                if view["leadership"]["role"] == "standby" and \
                        view["leadership"]["withheld"] == 0 and "leadership lost" in a.output():
                    break
                await anyio.sleep(0.2)
        await anyio.sleep(2)  # anything it sent late is on the topic by now
        records = await kafka.read_to_end(cfg, cfg.topic_prefix + "work.stage2")
        orders = [contract.decode(r.value, expected="work_order") for r in records]
        counts = collections.Counter(o["work_id"] for o in orders)
        assert len(counts) == len(events), f"{len(counts)} orders for {len(events)} events"
        twice = [w for w, c in counts.items() if c > 1]
        assert not twice, f"{len(twice)} order(s) sent twice (split brain)"
    finally:
        for p in planners:
            p.stop()


def orders_at_least(n: int):
    """wait_for's test for ``n`` distinct work orders, counted as they come
    (one message at a time: not the whole list again at each)."""
    work_ids: set[str] = set()

    def done(messages) -> bool:
        last = messages[-1]
        if isinstance(last, contract.Message) and last.type == "work_order":
            work_ids.add(last["work_id"])
        return len(work_ids) >= n
    return done


async def test_the_standby_killed_while_it_takes_over_starts_again_and_sends_each_once(
        broker, tmp_path, unique_prefix):
    """The active planner frozen, then killed, with orders it never sent: the
    standby decided and withheld them. The standby is killed while it takes
    over; started again (its work dir kept), it takes over and sends them,
    each once."""
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
    events = [product_event(cfg.products, cfg.inbox, p, n, 20)
              for p in (1, 2, 3) for n in range(1, 21)]
    first, rest = events[:20], events[20:]
    planners = [PlannerProcess(cfg, tmp_path / f"planner-{x}") for x in "ab"]
    try:
        with anyio.fail_after(180):
            while True:
                views = [await p.view() for p in planners]
                roles = sorted(v["leadership"]["role"] for v in views if v.get("caught_up"))
                if roles == ["active", "standby"]:
                    break
                await anyio.sleep(0.2)
        a, b = sorted(planners, key=lambda p: views[planners.index(p)]["leadership"]["role"])
        await publish(cfg, first)
        await wait_for(cfg, ["work.stage2"], orders_at_least(len(first)), 120)
        a.proc.send_signal(signal.SIGSTOP)  # it decides nothing more, and holds on to the lease
        await publish(cfg, rest)
        with anyio.fail_after(120):  # the standby decided them all, and sent none
            while (await b.view())["leadership"]["withheld"] < len(rest):
                await anyio.sleep(0.05)
        with anyio.fail_after(60):
            while "taking over" not in b.output():
                await anyio.sleep(0.01)
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        (b.work_dir / "deployment.json").unlink()  # the killed one's endpoint: not again's
        again = PlannerProcess(cfg, b.work_dir)  # its snapshot, if any, and the topics
        planners.append(again)
        with anyio.fail_after(180):
            await again.until("active")
        await wait_for(cfg, ["work.stage2"], orders_at_least(len(events)), 120)
        await anyio.sleep(2)  # anything sent late is on the topic by now
        records = await kafka.read_to_end(cfg, cfg.topic_prefix + "work.stage2")
        counts = collections.Counter(
            contract.decode(r.value, expected="work_order")["work_id"] for r in records)
        assert len(counts) == len(events)
        twice = [w for w, c in counts.items() if c > 1]
        assert not twice, f"{len(twice)} order(s) sent twice"
    finally:
        for p in planners:
            p.stop()
