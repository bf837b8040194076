"""Forged records on the planner's own topics (holds, plans) change nothing it decided.

Anyone who can write to the broker can write a ``released`` hold record for
a held exposure (its digest is in the public product event). Read back at
the planner's next start, it was taken as the planner's own release: the
detector1 product read again found "a release made before the restart" and
the PLANNED exposure was ordered into stage 2. A release comes only from
what the planner decided itself (its ledger, its snapshot) or from its
inputs (a pointing update, a corrected redelivery). Synthetic product
events (no jwst run), the session's real broker.
"""

from __future__ import annotations

import dataclasses
import json

import anyio
import pytest

from calstream.daemon.doers import planner_snapshots
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.topics import contract

from .support import daemon_config, read_all, running_daemon, until
from .test_holds import cli, send
from .test_planner_ha import product_event, publish
from .test_planner_parking import planned_pointing

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(300)]


def forged_release(held: dict) -> contract.Message:
    """What a forger sends: the planner's hold record, now "released by an operator"."""
    body = {k: v for k, v in held.items()
            if k not in ("schema", "schema_version", "event_id", "emitted_at", "producer")}
    body.update(state="released", release={
        "path": "operator", "at": contract.utc_now(), "by": "forger", "reason": "forged",
        "digest": held["digest"], "update_event_id": "f" * 64})
    return contract.build("hold", contract.event_id("hold", "forged", held["exposure_id"]),
                          **body)


def stage2_orders_for(messages: list, exposure: str) -> list:
    return [m for m in messages
            if getattr(m, "type", "") == "work_order" and exposure in json.dumps(m.body)]


@pytest.mark.parametrize("snapshot", [False, True], ids=["rebuild", "from-snapshot"])
async def test_a_forged_release_on_the_holds_topic_releases_nothing_at_a_restart(
        tmp_path, broker, unique_prefix, snapshot):
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"])
    held = planned_pointing(product_event(cfg.products, cfg.inbox, 4343, 1, 1))
    exposure = held["exposure_id"]
    async with running_daemon(cfg) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        await publish(cfg, [held])
        await until(lambda: daemon.planner.state.summary(0)["held"] == 1)
        await until(lambda: planner_snapshots.snapshot_path(cfg.work_dir).is_file())
    [own] = PlannerLedger(cfg.work_dir).kept("holds")
    assert own["state"] == "held"
    await send(cfg, "holds", exposure, contract.encode(forged_release(own)))
    if not snapshot:  # "Deleting the snapshot is always safe": a rebuild from the topics
        planner_snapshots.snapshot_path(cfg.work_dir).unlink()
    else:  # the product event read again after the snapshot (a redelivered announcement)
        again = contract.build("product", contract.event_id("product", "again", exposure),
                               **{k: v for k, v in held.body.items()
                                  if k not in ("schema", "schema_version", "event_id",
                                               "emitted_at", "producer")},
                               emitted_at=contract.utc_now())
        await publish(cfg, [again])
    async with running_daemon(cfg) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        await anyio.sleep(2)  # what it decides from the product event read again
        seen = daemon.planner.state.exposures[exposure]
        assert seen.provisional, seen.release
        assert daemon.planner.state.summary(0)["held"] == 1
        assert daemon.planner.holds[exposure]["state"] == "held"
    sent = await read_all(cfg, ["work.stage2"])
    assert not stage2_orders_for(sent, exposure)
    # The forged record is not what the planner keeps either.
    [kept] = PlannerLedger(cfg.work_dir).kept("holds")
    assert kept == own


async def test_holds_list_shows_what_the_planner_holds_not_a_forged_release(
        tmp_path, broker, unique_prefix):
    """`holds list` read the topic's last record: a forged release made it
    say "released" (and `holds release` refuse) while the planner held the
    exposure. Given the planner's work directory it shows the planner's own
    record, the topic's beside it, marked; elsewhere the topic's, marked as
    not checked."""
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"])
    held = planned_pointing(product_event(cfg.products, cfg.inbox, 4344, 1, 1))
    exposure = held["exposure_id"]
    async with running_daemon(cfg) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        await publish(cfg, [held])
        await until(lambda: daemon.planner.state.summary(0)["held"] == 1)
        # Its decision is in the state before its record is in the ledger
        # (kept just before it is sent): wait for the record too.
        await until(lambda: PlannerLedger(cfg.work_dir).kept("holds", tidy=False))
        [own] = PlannerLedger(cfg.work_dir).kept("holds")
        await send(cfg, "holds", exposure, contract.encode(forged_release(own)))
        here = ("--work-dir", str(cfg.work_dir))
        listed, as_json, released = [await anyio.to_thread.run_sync(cli, cfg, *argv) for argv in (
            ("list", *here), ("list", "--json", *here),
            ("release", exposure, "--reason", "WCS checked by hand", *here))]
        elsewhere = await anyio.to_thread.run_sync(
            cli, cfg, "list", "--all", "--json", "--work-dir", str(tmp_path / "elsewhere"))
    [row] = json.loads(as_json.stdout)
    assert (row["state"], row["source"], row["holds_topic"]["state"]) == (
        "held", "planner", "released"), row
    [line] = [x for x in listed.stdout.splitlines() if exposure in x]
    assert " held " in line and "the holds topic says released by forger: not the " \
        "planner's record" in line, listed.stdout
    assert released.returncode == 0, released  # the planner holds it: an operator may release
    [theirs] = json.loads(elsewhere.stdout)
    assert (theirs["state"], theirs["source"], theirs["checked"]) == (
        "released", "holds topic", False)
    assert "not checked against what the planner holds" in elsewhere.stderr


def forged_hold(model: dict, exposure: str) -> contract.Message:
    """A "held" record of ``exposure``, which the planner never held, in ``model``'s shape."""
    body = {k: v for k, v in model.items()
            if k not in ("schema", "schema_version", "event_id", "emitted_at", "producer")}
    body.update(exposure_id=exposure, reason="forged: held by nobody's decision")
    return contract.build("hold", contract.event_id("hold", "forged", exposure), **body)


async def test_status_and_the_console_show_the_holds_list_s_view(
        tmp_path, broker, unique_prefix):
    """`calstream status` and the console showed the holds topic's last
    record of each exposure while `holds list` shows the planner's: a forged
    release hid a hold the planner keeps, and a forged hold of an exposure
    the planner has no record of was shown held, unmarked. Now all three
    show the same rows, with the same marks, and the same note where no
    planner's ledger is reachable."""
    from calstream.daemon.operations import console_pages
    from calstream.daemon.operations.console_data import ConsoleData
    from calstream.daemon.operations.status_collection import collect
    from calstream.daemon.operations.status_render import printable

    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"])
    held = planned_pointing(product_event(cfg.products, cfg.inbox, 4345, 1, 2))
    exposure = held["exposure_id"]
    stranger = exposure.replace("_00001_", "_00002_")
    async with running_daemon(cfg) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        await publish(cfg, [held])
        await until(lambda: PlannerLedger(cfg.work_dir).kept("holds", tidy=False))
        [own] = PlannerLedger(cfg.work_dir).kept("holds", tidy=False)
        await send(cfg, "holds", exposure, contract.encode(forged_release(own)))
        await send(cfg, "holds", stranger, contract.encode(forged_hold(own, stranger)))
        address = daemon.ops.address
        listed = await anyio.to_thread.run_sync(
            cli, cfg, "list", "--json", "--work-dir", str(cfg.work_dir))
        status = await collect(cfg, [address])
        snap = await anyio.to_thread.run_sync(
            ConsoleData(cfg, lambda: [address]).snapshot)
        elsewhere = dataclasses.replace(cfg, work_dir=tmp_path / "elsewhere")
        unchecked = await collect(elsewhere, [address])
    rows = {r["exposure_id"]: (r["state"], r["source"]) for r in json.loads(listed.stdout)}
    assert rows == {exposure: ("held", "planner"), stranger: ("held", "holds topic")}, rows
    # On main: only the stranger, unmarked; the planner's hold hidden by the forged release.
    assert {h["exposure_id"]: (h["state"], h.get("source")) for h in status.broker.holds} == rows
    text = printable(status)
    [mine] = [x for x in text.splitlines() if exposure in x and "held since" in x]
    assert "the holds topic says released by forger: not the planner's record" in mine, text
    [theirs] = [x for x in text.splitlines() if stranger in x and "held since" in x]
    assert "the planner has none of this exposure" in theirs, text
    assert "not checked against what the planner holds" not in text
    obs = snap.observation("04345", "001")
    assert {e.exposure_id for e in obs.exposures.values() if e.hold} == set(rows)
    html = console_pages.observation_page(snap, obs, {}).decode()
    assert "the holds topic says released by forger: not the planner&#x27;s record" in html
    assert "the planner has none of this exposure" in html
    # Where no planner's ledger is: the topic's records, said to be unchecked.
    assert {h["exposure_id"]: (h["state"], h["source"], h["checked"])
            for h in unchecked.broker.holds} == {stranger: ("held", "holds topic", False)}
    assert f"no planner's ledger in {tmp_path / 'elsewhere'}" in printable(unchecked)


async def test_a_forged_plan_under_a_kept_plan_s_id_does_not_replace_it(
        tmp_path, broker, unique_prefix):
    """The broker lost its topics (the embedded one keeps them in memory;
    here: the same work directory on a fresh topic prefix), and a forged
    plan under the kept plan's id is on the new plans topic first: the
    planner took it as "still on the broker" and left its own kept copy
    unread, so the forged plan's candidates were the program's."""
    from calstream.daemon.operations.cli.plans import plan_message, publish_plan

    manifest = tmp_path / "plan.json"
    manifest.write_text(json.dumps({"exposures": [
        {"exposure_id": f"jw04344001001_02101_0000{n}_nrcb1", "candidates": ["o001"]}
        for n in (1, 2, 3)]}))
    plan = plan_message(manifest, "ops")
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"])
    async with running_daemon(cfg) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        await publish_plan(cfg, plan)
        await until(lambda: (cfg.work_dir / "planner" / "plans"
                             / f"{plan['plan_id']}.json").is_file())
    forged_body = {k: v for k, v in plan.body.items()
                   if k not in ("schema", "schema_version", "event_id", "emitted_at",
                                "producer")}
    forged_body["exposures"] = plan["exposures"][:1]  # the candidate closes at one member
    forged = contract.build("plan", contract.event_id("plan", "forged"), **forged_body)
    # "Deleting the snapshot is always safe": the plans come from the topic and the ledger.
    planner_snapshots.snapshot_path(cfg.work_dir).unlink(missing_ok=True)
    lost = daemon_config(tmp_path, broker, unique_prefix + "lost.", roles=["planner"])
    await publish_plan(lost, forged)
    async with running_daemon(lost) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        taken = daemon.planner.plans[plan["plan_id"]]
        assert len(taken.exposures) == 3, taken
