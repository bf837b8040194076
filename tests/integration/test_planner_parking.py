"""The planner's own disk full: it parks and resumes by itself.

The planner writes three things under its work directory: the plans and the
holds it keeps (doers/planner_ledger.py) and its snapshot. With that
directory on a small full tmpfs, a plan, a held exposure and the first
snapshot all meet ENOSPC; the planner must neither stop (taking the daemon
with it) nor dead-letter anything, and must keep all three once space is
freed. Synthetic product events (no jwst run), the session's real broker.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal

import anyio
import pytest

from calstream.daemon.doers import kafka, planner_snapshots
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.planner_leadership import GatedPublisher
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.operations.cli.plans import plan_message, publish_plan
from calstream.daemon.runtime import Daemon
from calstream.steps.synthetic.headers import exposure_id
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import (
    BROKER_TIMEOUT,
    broker_paused_before_first,
    daemon_config,
    metric,
    parked,
    read_all,
    running_daemon,
    scrape,
    until,
    wait_for,
)
from .test_holds import send
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


def stage2_event(rate: contract.Message) -> contract.Message:
    """The stage-2 product event of ``rate``'s exposure (a cal file)."""
    wid = hashlib.sha256(f"{rate['work_id']}-stage2".encode()).hexdigest()
    cal = str(rate["outputs"][0]["path"]).replace("_rate.fits", "_cal.fits")
    fields = {k: v for k, v in rate.body.items() if k not in ("event_id", "producer")}
    fields.update(work_id=wid, stage="stage2", pipeline="calwebb_image2",
                  inputs=[{"path": rate["outputs"][0]["path"],
                           "digest": rate["outputs"][0]["digest"]}],
                  outputs=[{"path": cal, "digest": "sha256:" + "c" * 64, "suffix": "cal"}],
                  emitted_at=contract.utc_now())
    return contract.build("product", contract.event_id("product", wid), **fields)


async def parked_until_continued(daemon, own: EmbeddedBroker) -> None:
    """Once the planner has parked on the stopped broker, the broker goes on
    (SIGCONT, also if the wait fails)."""
    try:
        await until(lambda: metric(scrape(daemon.ops.address), "calstream_parked_items",
                                   stage="planner", cause="broker_unreachable") >= 1,
                    timeout=90)
    finally:
        os.kill(own.process.pid, signal.SIGCONT)


async def test_the_planner_waits_out_a_broker_that_stops_answering_while_it_sends(
        tmp_path, unique_prefix):
    """The broker stops answering (SIGSTOP: connections hang, as on a lost
    host) just before the planner sends a stage-3 order from a tick. Its send
    times out after broker_timeout_seconds; the planner must keep the order and
    send it once the broker answers again, neither stopping nor losing it."""
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"],
                            stage3_settle=6.0, stage3_quiet_period=6.0, max_attempts=2,
                            retry_backoff=0.1, park_recheck_seconds=1.0, **BROKER_TIMEOUT)
        rate = product_event(cfg.products, cfg.inbox, 4343, 1, 1)
        async with running_daemon(cfg) as daemon:
            await until(lambda: daemon.planner and daemon.planner.caught_up)
            await publish(cfg, [rate, stage2_event(rate)])
            await wait_for(cfg, ["work.stage2"], lambda ms: any(
                getattr(m, "type", "") == "work_order" for m in ms), timeout=60)
            # The visit is complete: its stage-3 order is sent after the settle time.
            os.kill(own.process.pid, signal.SIGSTOP)
            await parked_until_continued(daemon, own)
            msgs = await wait_for(cfg, ["work.stage3"], lambda ms: any(
                getattr(m, "type", "") == "work_order" for m in ms), timeout=90)
            await until(lambda: metric(scrape(daemon.ops.address), "calstream_parked_items") == 0)
        orders = [m for m in msgs if getattr(m, "type", "") == "work_order"]
        assert len({o["event_id"] for o in orders}) == 1


async def test_orders_sent_unacknowledged_survive_a_broker_that_stops_answering(
        tmp_path, unique_prefix, monkeypatch):
    """The planner sends a fetch's stage-2 orders without waiting for each
    acknowledgement (doers/planner_publishing.py, Unacknowledged) and waits
    for them at the fetch's end. The broker stops answering (SIGSTOP) just
    as it starts to wait: the orders' sends time out, are sent again the
    waited way (parked until the broker answers) and arrive; the records'
    positions move only then.

    Stopped as the first order is handed to the producer, before the loop
    can write it: stopped at the wait instead (until session 46), the broker
    had at times answered every order already, nothing was left to park,
    and the test waited for a park that never came (a CI run)."""
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"],
                            retry_backoff=0.1, park_recheck_seconds=1.0, **BROKER_TIMEOUT)
        events = [product_event(cfg.products, cfg.inbox, 4545, n, 3) for n in (1, 2, 3)]
        settle, send, paused, stopped = Planner._settle, GatedPublisher.send, [], []

        async def stopping_at_the_first_order(self, topic, *args, **kwargs):
            answered = await send(self, topic, *args, **kwargs)
            if topic.startswith("work.") and not stopped:  # no await since its hand-over
                os.kill(own.process.pid, signal.SIGSTOP)
                stopped.append(topic)
            return answered

        async def noting_orders_in_flight(self):
            if self.unacked and not paused:
                paused.append([dict(self.positions), dict(self.unacked.positions)])
            return await settle(self)

        monkeypatch.setattr(GatedPublisher, "send", stopping_at_the_first_order)
        monkeypatch.setattr(Planner, "_settle", noting_orders_in_flight)
        async with running_daemon(cfg) as daemon:
            await until(lambda: daemon.planner and daemon.planner.caught_up)
            await publish(cfg, events)
            await parked_until_continued(daemon, own)
            msgs = await wait_for(cfg, ["work.stage2"], lambda ms: len(
                {m["product_name"] for m in ms if getattr(m, "type", "") == "work_order"}) == 3,
                timeout=90)
            await until(lambda: metric(scrape(daemon.ops.address), "calstream_parked_items") == 0)
            products = Topics(cfg.topic_prefix).name("products")
            # Before the wait, the records' positions had not moved; after it, they have.
            before, waiting = paused[0]
            assert not any(t == products for t, _ in before) and waiting
            await until(lambda: sum(o for (t, _), o in daemon.planner.positions.items()
                                    if t == products) == 3)
        orders = [m for m in msgs if getattr(m, "type", "") == "work_order"]
        assert {o["product_name"] for o in orders} == {e["exposure_id"] for e in events}


@pytest.mark.parametrize("moment", ["re-publish", "dead letter"])
async def test_the_planner_s_restore_waits_out_a_broker_that_stops_answering(
        tmp_path, unique_prefix, monkeypatch, moment):
    """The broker stops answering (SIGSTOP) as the planner's restore sends:
    re-publishing a plan its ledger keeps and the broker lost, or
    dead-lettering a hold record it cannot read. The send is parked
    (``calstream_parked_items{stage="planner"}``) and made once the broker
    answers: the planner neither stops (taking the daemon with it) nor loses
    the record, and what reaches the topic is one event (a send that timed
    out but reached the broker comes again with the same event id).
    Meanwhile /readyz names the broker the restore waits for, and does not
    say it catches up: it is not reading."""
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"],
                            max_attempts=2, retry_backoff=0.1, park_recheck_seconds=1.0,
                            **BROKER_TIMEOUT)
        event = product_event(cfg.products, cfg.inbox, 4747, 1, 2)
        manifest = tmp_path / "plan.json"
        manifest.write_text(json.dumps({"exposures": [
            {"exposure_id": exposure_id(event["header"]), "candidates": ["o001"]}]}))
        plan = plan_message(manifest, "test")
        if moment == "re-publish":  # kept by an earlier run; this broker never had it
            PlannerLedger(cfg.work_dir).keep("plans", plan.body)
            hooked, topic = "_restore_from_disk", "plans"
        else:
            await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
            await send(cfg, "holds", "jw-unreadable", b"not a hold")  # on the topic before
            hooked, topic = "_reject", "deadletter"
        stopped = broker_paused_before_first(monkeypatch, Planner, hooked, own, hooked)
        daemon = Daemon(cfg)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                # Parked after the send's time-out (broker_timeout_seconds).
                # (300 s: a bound for a broken daemon, not a measure)
                await until(lambda: parked(daemon, "planner"), timeout=300)
                assert stopped == [hooked]
                assert not daemon.planner.caught_up
                waited = f"waiting for the broker {own.bootstrap} (the planner's producer), sending"
                with anyio.fail_after(60):  # named from the first failure on: now
                    while not any(waited in p for p in daemon.readiness()[1]):
                        await anyio.sleep(0.2)
                problems = daemon.readiness()[1]
                assert not any("catching up" in p for p in problems), problems
                os.kill(own.process.pid, signal.SIGCONT)
                with anyio.fail_after(180):
                    while not (daemon.start_waits.done and daemon.readiness()[0]):
                        await anyio.sleep(0.2)
                await until(lambda: metric(scrape(daemon.ops.address),
                                           "calstream_parked_items") == 0)
                sent = [m for m in await read_all(cfg, [topic])
                        if isinstance(m, contract.Message)]
                tg.cancel_scope.cancel()
        finally:
            os.kill(own.process.pid, signal.SIGCONT)  # stopped, it would not stop
    if moment == "re-publish":
        assert {m["event_id"] for m in sent if m.type == "plan"} == {plan["event_id"]}
    else:
        letters = [m for m in dead_letters(sent) if m["original"]["topic"].endswith("holds")]
        assert len({m["event_id"] for m in letters}) == 1, letters
