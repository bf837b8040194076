"""The embedded default after a broker that lost everything (memory engine):
the planner's state comes back from the product store and its ledger, so
stage-3 versions continue and plans still close their candidates. Each
restart runs the daemon on a fresh EmbeddedBroker with the same work
directory and product tree."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import anyio
import pytest

from calstream.daemon.deciders.replay_selection import Selection
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.operations.cli.plans import loaded_plans, plan_message, publish_plan
from calstream.daemon.operations.replay import run_replay
from calstream.steps.environment import environ
from calstream.steps.fitsfile import file_digest
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec, simulate_program
from calstream.topics import contract

from .support import UP_TO_STAGE2, daemon_config, products, read_all, running_daemon, wait_for
from .test_holds import cli as holds_cli
from .test_holds import run_until_held

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SETTLE = 2.0


@pytest.fixture(scope="module")
def kit2(tmp_path_factory):
    """Observation 001 in two visits of two dithers each (SUB160P: one
    detector, so NEXPOSUR says when a visit is complete); the second visit's
    last dither is the late one."""
    root = tmp_path_factory.mktemp("kit2")
    k = build_kit(root, ProgramSpec(subarray="SUB160P", dithers=2), seed=7,
                  modes=("imaging", "mosaic"))
    with environ(k.crds_env):
        yield k


def visit(path: Path) -> str:
    return parse_exposure_name(path.name).visit


def stage3_done(messages) -> list[contract.Message]:
    return [p for p in products(messages, "stage3") if p["outcome"] == "success"]


def observation_orders(messages) -> list[contract.Message]:
    return [m for m in messages if isinstance(m, contract.Message)
            and "-o001_" in m["product_name"]]


async def caught_up(daemon) -> float:
    """Seconds from now until the planner has rebuilt its state."""
    started = time.monotonic()
    with anyio.fail_after(60):
        while not (daemon.planner and daemon.planner.caught_up):
            await anyio.sleep(0.2)
    return time.monotonic() - started


def no_unannounced_files(root: Path) -> None:
    """Every FITS file in the tree is one a provenance record announces."""
    store = ProductStore(root)
    loose = [p for p in root.rglob("*.fits") if not any(part.startswith(".") for part in
             p.relative_to(root).parts) and store.announced(p) is None]
    assert loose == []


async def test_stage3_versions_continue_after_a_restart_on_a_broker_that_lost_everything(
        tmp_path, broker, kit2, unique_prefix):
    [late] = kit2.late
    first_visit = [f for f in kit2.delivery_order() if visit(f) == "001"]
    second_visit = [f for f in kit2.delivery_order() if visit(f) == "002" and f != late]
    cfg = daemon_config(tmp_path, broker, unique_prefix, workers=1, stage3_settle=SETTLE,
                        stage3_quiet_period=3600.0)
    async with running_daemon(cfg):
        await anyio.to_thread.run_sync(lambda: deliver(first_visit, cfg.inbox))
        [v1] = stage3_done(await wait_for(cfg, ["products"], stage3_done, timeout=300))
        await anyio.to_thread.run_sync(lambda: deliver(second_visit, cfg.inbox))
        await wait_for(cfg, ["products"], lambda ms: any(
            p["exposure_id"] == parse_exposure_name(second_visit[0].name).exposure_id
            for p in products(ms, "stage2")), timeout=300)
    assert v1["version"] == 1 and len(v1["association"]["members"]) == 2
    # The broker dies with everything it held; a new one knows nothing.
    with EmbeddedBroker(tmp_path / "broker2") as fresh:
        cfg2 = dataclasses.replace(cfg, kafka_bootstrap=fresh.bootstrap)
        started = time.monotonic()
        async with running_daemon(cfg2) as daemon:
            await caught_up(daemon)
            print(f"memory-broker restart: planner rebuilt {time.monotonic() - started:.1f} s "
                  "after the daemon started")
            assert not [m for m in await read_all(cfg2, ["work.stage3"])
                        if isinstance(m, contract.Message)]  # nothing ordered again
            # The new broker's raw topic lacks the arrivals of what was done:
            # a replay takes them from the product store, and says what the
            # stage-2 topic lacks (deciders/replay_from_store.py).
            from_raw = await run_replay(cfg2, source="raw", selection=Selection(),
                                        namespace="again", crds_context=None, dry_run=True)
            done = {parse_exposure_name(f.name).exposure_id for f in first_visit + second_visit}
            assert {i["name"] for i in from_raw["items"]} == done, from_raw
            assert from_raw["selected"] == len(done) and from_raw["from_store"] >= 1
            assert not from_raw["gaps"] and from_raw["published"] == 0
            from_stage2 = await run_replay(cfg2, source="stage2", selection=Selection(),
                                           namespace="again", crds_context=None, dry_run=True)
            # The rebuild ordered none of them again: each order was held while
            # it caught up and dropped when its product came (deciders/catch_up_orders.py).
            assert not [m for m in await read_all(cfg2, ["work.stage2"])
                        if isinstance(m, contract.Message)]
            assert from_stage2["selected"] == 0
            assert f"{len(done)} live stage2 product(s) have no work order" \
                in from_stage2["gaps"][-1], from_stage2["gaps"]
            await anyio.to_thread.run_sync(lambda: deliver([late], cfg2.inbox))
            # The order after the last dither continues the versions.
            first = [m for m in await wait_for(cfg2, ["work.stage3"], lambda ms: [
                m for m in ms if isinstance(m, contract.Message)], timeout=300)
                if isinstance(m, contract.Message)]
            assert [(o["version"], len(o["members"])) for o in first] == [(2, 4)]
            done = await wait_for(cfg2, ["products"], lambda ms: [
                p for p in stage3_done(ms) if p["version"] == 2], timeout=300)
            orders = [m for m in await read_all(cfg2, ["work.stage3"])
                      if isinstance(m, contract.Message)]
    [v2] = [p for p in stage3_done(done) if p["version"] == 2]
    assert v2["product_name"] == v1["product_name"]
    assert v2["supersedes"] == v1["event_id"]
    assert len(v2["association"]["members"]) == 4 and not v2.get("degraded")
    assert [(o["version"], len(o["members"])) for o in orders] == [(2, 4)]
    # Version 1 untouched beside it; version 2 in its own directory.
    for o in v1["outputs"]:
        assert file_digest(o["path"]) == o["digest"]
    assert {Path(o["path"]).parent.name for o in v2["outputs"]} == {"v2"}
    no_unannounced_files(cfg.products)


async def test_a_plan_survives_a_restart_on_a_broker_that_lost_it_and_still_closes(
        tmp_path, broker, kit2, unique_prefix):
    first_visit = [f for f in kit2.delivery_order() if visit(f) == "001"]
    # A plan of the first visit only (the kit's pool, its rows of visit 001).
    rows = kit2.pool_path.read_text().splitlines()
    pool = tmp_path / "visit1_pool.csv"
    pool.write_text("\n".join([rows[0]] + [r for r in rows[1:] if "jw01234001001_" in r]) + "\n")
    message = plan_message(pool, "test")
    # Headers alone would wait an hour: only the plan can close the candidate.
    cfg = daemon_config(tmp_path, broker, unique_prefix, workers=1, stage3_settle=3600.0,
                        stage3_quiet_period=7200.0, roles=["planner"])
    async with running_daemon(cfg) as daemon:
        await publish_plan(cfg, message)
        with anyio.fail_after(60):
            while message["plan_id"] not in daemon.planner.plans:
                await anyio.sleep(0.2)
    with EmbeddedBroker(tmp_path / "broker2") as fresh:
        # The order is the planner's, from stage-2 products: no stage 3 here.
        cfg2 = dataclasses.replace(cfg, kafka_bootstrap=fresh.bootstrap, roles=UP_TO_STAGE2)
        async with running_daemon(cfg2) as daemon:
            await caught_up(daemon)
            assert message["plan_id"] in daemon.planner.plans
            # Re-published: `calstream plan list` sees it on the new broker.
            assert [p["plan_id"] for p in await loaded_plans(cfg2)] == [message["plan_id"]]
            await anyio.to_thread.run_sync(lambda: deliver(first_visit, cfg2.inbox))
            found = await wait_for(cfg2, ["work.stage3"], lambda ms: observation_orders(ms),
                                   timeout=300)
    [order] = observation_orders(found)
    assert order["expected_by"] == "plan" and order["degraded"] is None
    assert len(order["members"]) == 2


async def test_an_operator_release_survives_a_restart_on_a_broker_that_lost_it(
        tmp_path, broker, kit2, unique_prefix):
    # The module's kit: its CRDS settings are the ones in force here (the
    # session kit's SUB160 references are not in this module's cache).
    spec = dataclasses.replace(ProgramSpec(subarray="SUB160P"), planned=(2,), dithers=2)
    files = simulate_program(tmp_path / "uncal", spec, seed=9)
    held = parse_exposure_name(files[1].name).exposure_id
    cfg = daemon_config(tmp_path, broker, unique_prefix, workers=1, roles=UP_TO_STAGE2)
    async with running_daemon(cfg):
        await run_until_held(cfg, files)
        done = await anyio.to_thread.run_sync(
            lambda: holds_cli(cfg, "release", held, "--reason", "WCS checked by hand"))
        assert done.returncode == 0, done.stderr
        await wait_for(cfg, ["holds"], lambda ms: [
            m for m in ms if isinstance(m, contract.Message) and m["state"] == "released"],
            timeout=120)
    with EmbeddedBroker(tmp_path / "broker2") as fresh:
        # Only the planner keeps holds: no stage runs after this restart.
        cfg2 = dataclasses.replace(cfg, kafka_bootstrap=fresh.bootstrap, roles=["planner"])
        async with running_daemon(cfg2) as daemon:
            await caught_up(daemon)
            # Released, not held again from its PLANNED detector1 product.
            assert daemon.planner.state.summary(0)["held"] == 0
            assert daemon.planner.holds[held]["release"]["path"] == "operator"
            listed = await anyio.to_thread.run_sync(lambda: holds_cli(cfg2, "list", "--all"))
    assert "WCS checked by hand" in listed.stdout, listed.stdout + listed.stderr
