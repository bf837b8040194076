"""Pointing holds end to end: release by a pointing update, by an operator; bad updates."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from astropy.io import fits
from stdatamodels.jwst import datamodels

from calstream.daemon.doers import kafka
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.program import ProgramSpec, simulate_program
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import UP_TO_STAGE2, daemon_config, products, running_daemon, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
ROOT = Path(__file__).resolve().parents[2]


def eid(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


def true_pointing(path: Path) -> dict:
    """What set_telescope_pointing would write: the measured pointing."""
    with datamodels.open(path) as m:
        return {"ENGQLPTG": m.meta.visit.engdb_pointing_quality,
                "RA_V1": m.meta.pointing.ra_v1, "DEC_V1": m.meta.pointing.dec_v1,
                "PA_V3": m.meta.pointing.pa_v3, "RA_REF": m.meta.wcsinfo.ra_ref,
                "DEC_REF": m.meta.wcsinfo.dec_ref, "ROLL_REF": m.meta.wcsinfo.roll_ref}


async def send(cfg, topic: str, key: str, value: bytes) -> None:
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        await producer.send_and_wait(Topics(cfg.topic_prefix).name(topic), value,
                                     key=key.encode())
    finally:
        await producer.stop()


def cli(cfg, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "calstream.daemon.operations.cli", "holds", *args, "--kafka-bootstrap",
         cfg.kafka_bootstrap, "--topic-prefix", cfg.topic_prefix],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ))


def scan_stage2_products(products_dir: Path) -> list[str]:
    """Every stage-2 FITS product on disk built from PLANNED pointing, unless an
    operator's release says so in its header."""
    leaks = []
    for path in products_dir.rglob("*_cal*.fits"):
        header = fits.getheader(path, 0)
        if header.get("ENGQLPTG") == "PLANNED":
            history = " ".join(str(h) for h in header.get("HISTORY", []))
            if "released by operator" not in history:
                leaks.append(str(path))
    return leaks


def held_visit(tmp_path: Path, planned: tuple[int, ...]) -> tuple[list[Path], Path]:
    """The visit's files (the ``planned`` exposures on planned pointing), and
    the second exposure as measured: what its pointing update corrects it to."""
    spec = dataclasses.replace(ProgramSpec(), planned=planned, dithers=1 + len(planned))
    files = simulate_program(tmp_path / "uncal", spec, seed=9)
    measured = next(f for f in simulate_program(tmp_path / "measured",
                                                dataclasses.replace(spec, planned=()), seed=9)
                    if eid(f) == eid(files[1]))
    return files, measured


@pytest.fixture
def visit(tmp_path):
    return held_visit(tmp_path, planned=(2,))


@pytest.fixture
def two_held(tmp_path):
    """One good exposure and two on planned pointing: the first is released by
    a pointing update (its measured twin given), the second by an operator."""
    return held_visit(tmp_path, planned=(2, 3))


async def run_until_held(cfg, files, held_files=1):
    good = eid(files[0])
    held = {eid(f) for f in files[1:1 + held_files]}
    await anyio.to_thread.run_sync(lambda: deliver(files, cfg.inbox))
    return await wait_for(
        cfg, ["products", "holds"],
        lambda ms: good in {p["exposure_id"] for p in products(ms, "stage2")}
        and held <= {m["exposure_id"] for m in ms
                     if isinstance(m, contract.Message) and m.type == "hold"}, timeout=300)


async def test_holds_released_by_a_pointing_update_and_by_an_operator(
        tmp_path, broker, kit, unique_prefix, two_held):
    """One daemon run, two held exposures: the first released by a pointing
    update (after bad updates that release nothing) with corrected pointing,
    the second by an operator, keeping PLANNED and recording why."""
    files, measured = two_held
    held, by_operator = eid(files[1]), eid(files[2])
    cfg = daemon_config(tmp_path, broker, unique_prefix, workers=1, roles=UP_TO_STAGE2)
    keywords = true_pointing(measured)
    async with running_daemon(cfg):
        await run_until_held(cfg, files, held_files=2)
        # -- released by a pointing update ---------------------------------
        listed = await anyio.to_thread.run_sync(lambda: cli(cfg, "list"))
        assert listed.returncode == 0 and held in listed.stdout and "PLANNED" in listed.stdout
        # Bad updates first: each is dead-lettered and releases nothing.
        body = contract.build("pointing_update", "a" * 64, exposure_id=held, action="correct",
                              keywords=keywords).body
        await send(cfg, "pointing", held, b"{not json")
        await send(cfg, "pointing", held, json.dumps(
            {**body, "event_id": "b" * 64, "keywords": {**keywords, "DEC_V1": 95.0}}).encode())
        await send(cfg, "pointing", "jw09999001001_02101_00001_nrcb1", json.dumps(
            {**body, "event_id": "c" * 64,
             "exposure_id": "jw09999001001_02101_00001_nrcb1"}).encode())
        dead = await wait_for(cfg, ["deadletter"], lambda ms: len(ms) >= 3, timeout=60)
        assert [d["category"] for d in dead] == ["rejected_update"] * 3
        assert "not JSON" in dead[0]["reason"] and "DEC_V1" in dead[1]["reason"]
        assert "unknown exposure" in dead[2]["reason"]
        assert held in (await anyio.to_thread.run_sync(lambda: cli(cfg, "list"))).stdout
        # The good one.
        update = contract.build("pointing_update", contract.event_id("pu", held),
                                exposure_id=held, action="correct", keywords=keywords,
                                source="test: set_telescope_pointing")
        await send(cfg, "pointing", held, contract.encode(update))
        corrected = await wait_for(
            cfg, ["products"], lambda ms: held in {p["exposure_id"] for p in products(ms, "stage2")},
            timeout=300)
        assert scan_stage2_products(cfg.products) == []
        # -- released by an operator ---------------------------------------
        done = await anyio.to_thread.run_sync(
            lambda: cli(cfg, "release", by_operator, "--reason",
                        "telemetry lost; WCS checked by hand", "--by", "night-ops"))
        assert done.returncode == 0, done.stderr
        final = await wait_for(
            cfg, ["products", "holds"],
            lambda ms: by_operator in {p["exposure_id"] for p in products(ms, "stage2")},
            timeout=300)
        listed = await anyio.to_thread.run_sync(lambda: cli(cfg, "list", "--all"))

    event = next(p for p in products(corrected, "stage2") if p["exposure_id"] == held)
    assert event["pointing_quality"].startswith("CALCULATED")
    assert not event["pointing_provisional"]
    assert event["releases"][held]["path"] == "pointing"
    assert event["releases"][held]["update_event_id"] == update.event_id
    cal = next(o["path"] for o in event["outputs"] if o["suffix"] == "cal")
    with datamodels.open(cal) as m:
        assert m.meta.visit.engdb_pointing_quality.startswith("CALCULATED")
        assert m.meta.wcsinfo.ra_ref == pytest.approx(keywords["RA_REF"])
        assert m.meta.wcsinfo.roll_ref == pytest.approx(keywords["ROLL_REF"])

    assert "operator: telemetry lost" in listed.stdout and "night-ops" in listed.stdout
    hold = [m for m in final if m.type == "hold" and m["exposure_id"] == by_operator][-1]
    assert hold["state"] == "released" and hold["release"]["path"] == "operator"
    assert hold["release"]["by"] == "night-ops"
    event = next(p for p in products(final, "stage2") if p["exposure_id"] == by_operator)
    assert event["pointing_quality"] == "PLANNED" and event["pointing_provisional"] is True
    assert event["releases"][by_operator]["reason"] == "telemetry lost; WCS checked by hand"
    cal = next(o["path"] for o in event["outputs"] if o["suffix"] == "cal")
    header = fits.getheader(cal, 0)
    assert header["ENGQLPTG"] == "PLANNED"
    assert "released by operator" in " ".join(str(h) for h in header["HISTORY"])
    assert scan_stage2_products(cfg.products) == []  # the released one says so


async def test_a_hold_survives_a_restart_of_the_embedded_broker(tmp_path, kit, visit):
    """The embedded broker keeps topics in memory: after a full restart the
    product store is replayed, and the hold is there again."""
    from calstream.daemon.operations.config import load
    from calstream.daemon.runtime import Daemon

    files, _ = visit
    held = eid(files[1])
    flags = {"work_dir": tmp_path / "work", "workers": 1, "metrics_address": "127.0.0.1:0",
             "fast_group_timing": True, "settle_seconds": 0.2}
    for attempt in (1, 2):
        # After the restart only the planner is needed: it keeps the holds.
        roles = UP_TO_STAGE2 if attempt == 1 else ["planner"]
        daemon = Daemon(load(None, env={}, flags={**flags, "roles": roles}))
        daemon.start_broker()  # a new, empty embedded broker each time
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(daemon.run)
                if attempt == 1:
                    await run_until_held(daemon.cfg, files)
                with anyio.fail_after(120):
                    while not (daemon.planner.caught_up
                               and daemon.planner.state.summary(0)["held"] == 1):
                        await anyio.sleep(0.2)
                listed = await anyio.to_thread.run_sync(cli, daemon.cfg, "list")
                assert held in listed.stdout, (attempt, listed.stdout, listed.stderr)
                tg.cancel_scope.cancel()
        finally:
            daemon.stop_broker()
