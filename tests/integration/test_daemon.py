"""Arrival to rate product, end to end: real broker, real files, real jwst, real crds."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import pytest
from astropy.io import fits

from calstream.daemon.doers.product_store import ProductStore
from calstream.steps.fitsfile import file_digest
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.topics import contract
from calstream.topics.catalog import Topics
from tests.processes import alive

from .support import (
    daemon_config,
    metric,
    products,
    read_all,
    running_daemon,
    scrape,
    until,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Detector1 is all the first two tests look at: no pools warmed for later stages.
DETECTOR1 = ["watcher", "detector1"]


def exposure_id(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


def check_rate_product(event: contract.Message, kit) -> None:
    """The product on disk is what the event says, and a real rate image."""
    assert event["outcome"] == "success"
    assert event["crds_context"] == kit.context
    assert event["duration_seconds"] > 0
    suffixes = {o["suffix"] for o in event["outputs"]}
    assert "rate" in suffixes
    for out in event["outputs"]:
        path = Path(out["path"])
        assert path.parent.parts[-2:] == (event["program"], event["observation"])
        assert file_digest(path) == out["digest"]
    rate = next(Path(o["path"]) for o in event["outputs"] if o["suffix"] == "rate")
    with fits.open(rate) as hdul:
        assert hdul[0].header["CRDS_CTX"] == kit.context
        assert hdul[0].header["EXP_TYPE"] == "NRC_IMAGE"
        sci = hdul["SCI"].data
        assert sci.ndim == 2 and float(abs(sci[sci == sci]).mean()) > 0


async def test_dropped_files_become_rate_products_and_events(tmp_path, broker, kit,
                                                             unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=DETECTOR1)
    whole, pieces = kit.uncal_files[0], kit.uncal_files[1]
    assert cfg.warm_workers == ["on_first_work"]  # the tests' default (support.py)
    async with running_daemon(cfg) as daemon:
        # Warmed on first work: no worker yet, and ready all the same (readiness
        # is the consumers' and the planner's, never the workers').
        (pool,) = daemon.pools.values()
        await until(lambda: daemon.readiness() == (True, []))
        assert pool.workers_started == 0
        await anyio.to_thread.run_sync(lambda: deliver([whole], cfg.inbox))
        # Written in pieces with pauses longer than the settle time: must not
        # be announced before the last piece.
        await anyio.to_thread.run_sync(
            lambda: deliver([pieces], cfg.inbox, pieces=4, piece_delay=0.6))
        msgs = await wait_for(cfg, ["raw", "products"], lambda ms: len(products(ms)) >= 2,
                              timeout=240)
        # A product event is on the topic before its item is finished (its
        # offset recorded, the gauge lowered): the gauges are read once the
        # last item is, not at the moment a reader sees its event.
        await until(lambda: metric(scrape(daemon.ops.address), "calstream_in_flight",
                                   stage="detector1") == 0)
        samples = scrape(daemon.ops.address)
        await until(lambda: readyz(daemon) == {"ready": True, "problems": []})
        assert pool.workers_started == 1  # the first item started it; it calibrated both
    arrivals = [m for m in msgs if m.type == "arrival"]
    assert sorted(a["exposure_id"] for a in arrivals) == sorted(map(exposure_id, [whole, pieces]))
    for a in arrivals:
        # announced once, with the digest of the complete file
        assert a["digest"] == file_digest(cfg.inbox / Path(a["path"]).name) == file_digest(
            next(f for f in kit.uncal_files if exposure_id(f) == a["exposure_id"]))
    for event in products(msgs):
        check_rate_product(event, kit)
        arrival = next(a for a in arrivals if a["exposure_id"] == event["exposure_id"])
        assert event["inputs"][0]["digest"] == arrival["digest"]
        assert event["arrived_at"] == arrival["detected_at"]
        assert event["pointing_quality"] == arrival["header"]["ENGQLPTG"]
    assert metric(samples, "calstream_arrivals_total") == 2
    assert metric(samples, "calstream_stage_runs_total", stage="detector1", outcome="success") == 2
    assert metric(samples, "calstream_end_to_end_latency_seconds_count", stage="detector1") == 2
    assert metric(samples, "calstream_stage_duration_seconds_count", stage="detector1") == 2
    assert metric(samples, "calstream_in_flight", stage="detector1") == 0
    assert metric(samples, "calstream_build_info", crds_context=kit.context) == 1


async def test_a_redelivered_arrival_is_not_recalibrated(tmp_path, broker, kit, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=DETECTOR1)
    topics = Topics(cfg.topic_prefix)
    async with running_daemon(cfg) as daemon:
        await anyio.to_thread.run_sync(lambda: deliver(kit.uncal_files[:1], cfg.inbox))
        first = await wait_for(cfg, ["raw", "products"], lambda ms: len(products(ms)) >= 1)
        event = products(first)[0]
        rate = Path(next(o["path"] for o in event["outputs"] if o["suffix"] == "rate"))
        mtime = rate.stat().st_mtime_ns
        arrival = next(m for m in first if m.type == "arrival")
        # The broker redelivers it (at-least-once): the very same bytes again.
        from calstream.daemon.doers import kafka

        producer = kafka.producer(cfg)
        await producer.start()
        try:
            await producer.send_and_wait(topics.name("raw"), contract.encode(arrival),
                                         key=arrival["exposure_id"].encode())
        finally:
            await producer.stop()
        again = await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 2)
        # Counted once its event is out: read when it is, not when a reader sees the event.
        await until(lambda: metric(scrape(daemon.ops.address), "calstream_stage_runs_total",
                                   outcome="duplicate") >= 1)
        samples = scrape(daemon.ops.address)
    events = products(again)
    assert events[0].event_id == events[1].event_id == event.event_id
    assert {k: v for k, v in events[1].body.items() if k != "emitted_at"} == \
        {k: v for k, v in event.body.items() if k != "emitted_at"}
    assert rate.stat().st_mtime_ns == mtime
    assert metric(samples, "calstream_stage_runs_total", outcome="success") == 1
    assert metric(samples, "calstream_stage_runs_total", outcome="duplicate") == 1


def _bad_files(kit, where: Path) -> dict[str, str]:
    """Bad uncal files, each with the words its dead letter must contain."""
    where.mkdir(parents=True, exist_ok=True)
    good = kit.uncal_files[0]
    name = parse_exposure_name(good.name)
    made = {}
    not_fits = where / f"jw{name.program}{name.observation}{name.visit}_02101_00091_nrcb1_uncal.fits"
    not_fits.write_text("this is a telemetry log, not a FITS file\n" * 100)
    made[not_fits.name] = "not a FITS"
    mismatch = where / name.with_suffix("uncal").filename().replace("_00001_", "_00092_")
    shutil.copy(kit.uncal_files[0], mismatch)
    made[mismatch.name] = "EXPOSURE"
    missing = where / name.filename("uncal").replace("_00001_", "_00093_")
    with fits.open(good) as hdul:
        hdul[0].header["EXPOSURE"] = "00093"
        del hdul[0].header["ENGQLPTG"]
        hdul.writeto(missing)
    made[missing.name] = "ENGQLPTG"
    truncated = where / name.filename("uncal").replace("_00001_", "_00094_")
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    made[truncated.name] = "truncated"
    stray = where / "downlink-notes.txt"
    stray.write_text("not an exposure")
    made[stray.name] = "not a JWST exposure name"
    return made


async def test_bad_input_goes_to_the_dead_letter_topic_and_good_files_flow(
        tmp_path, broker, kit, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix, incomplete_timeout=2.0)
    topics = Topics(cfg.topic_prefix)
    bad = _bad_files(kit, tmp_path / "bad")
    outside = tmp_path / "elsewhere" / kit.uncal_files[1].name
    outside.parent.mkdir()
    shutil.copy(kit.uncal_files[1], outside)
    async with running_daemon(cfg) as daemon:
        for f in sorted((tmp_path / "bad").iterdir()):
            shutil.copy(f, cfg.inbox / f.name)
        from calstream.daemon.doers import kafka

        producer = kafka.producer(cfg)
        await producer.start()
        try:
            await producer.send_and_wait(topics.name("raw"), b"\x00garbage", key=b"junk")
            forged = contract.build(
                "arrival", contract.event_id("arrival", "forged"),
                exposure_id=exposure_id(outside), path=str(outside), digest=file_digest(outside),
                size=outside.stat().st_size, detected_at=contract.utc_now(), source="watch",
                header=json.loads(json.dumps(dict(_header(outside)))))
            await producer.send_and_wait(topics.name("raw"), contract.encode(forged),
                                         key=b"forged")
        finally:
            await producer.stop()
        await anyio.to_thread.run_sync(lambda: deliver(kit.uncal_files[2:3], cfg.inbox))

        def done(ms):
            dead = [m for m in ms if isinstance(m, contract.Message) and m.type == "dead_letter"]
            return len(products(ms)) >= 1 and len(dead) >= len(bad) + 2

        msgs = await wait_for(cfg, ["products", "deadletter"], done, timeout=240)
        # Ready once the last item is finished (not at the moment its event is seen).
        await until(lambda: readyz(daemon)["ready"], timeout=120)
        ready = readyz(daemon)
    dead = [m for m in msgs if m.type == "dead_letter"]
    by_file = {Path(m["path"]).name: m for m in dead if m["stage"] == "watcher"}
    for fname, words in bad.items():
        letter = by_file[fname]
        assert words.lower() in letter["reason"].lower(), (fname, letter["reason"])
        assert Path(letter["quarantined_to"]).is_file()
        assert not (cfg.inbox / fname).exists()
    invalid = [m for m in dead if m["category"] == "invalid_message"]
    assert len(invalid) == 1 and invalid[0]["original"]["key"] == "junk"
    assert "not JSON" in invalid[0]["reason"]
    outside_letter = [m for m in dead if m["category"] == "bad_input"]
    assert len(outside_letter) == 1 and "outside the allowed roots" in outside_letter[0]["reason"]
    assert [p["exposure_id"] for p in products(msgs)] == [exposure_id(kit.uncal_files[2])]
    check_rate_product(products(msgs)[0], kit)
    assert ready["ready"] is True


def readyz(daemon) -> dict:
    try:
        with urllib.request.urlopen(f"http://{daemon.ops.address}/readyz", timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 503 while not ready: the body says why
        return json.load(e)


def _header(path: Path) -> dict:
    from calstream.steps.exposure import describe_exposure

    return describe_exposure(path).header


def _descendants(pid: int) -> set[int]:
    """Its children and theirs: the workers are the worker server's children."""
    kids = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread or a process that just ended
            kids.update(int(k) for k in (task / "children").read_text().split())
    for kid in list(kids):
        with contextlib.suppress(OSError):
            kids |= _descendants(kid)
    return kids


async def test_sigkill_mid_run_then_restart_loses_nothing(tmp_path, broker, kit, unique_prefix):
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "calstream.daemon.operations.cli", "run", "--kafka-bootstrap", broker,
           "--topic-prefix", unique_prefix, "--work-dir", str(work), "--workers", "1",
           "--metrics-address", "127.0.0.1:0"]
    env = {**os.environ, "CALSTREAM_FAST_GROUP_TIMING": "true",
           "CALSTREAM_WARM_WORKERS": "on_first_work",
           "CALSTREAM_SETTLE_SECONDS": "0.2", "CALSTREAM_GROUP_PREFIX": unique_prefix.rstrip(".")}
    cfg = daemon_config(tmp_path, broker, unique_prefix)
    files = kit.uncal_files[:4]
    log1 = open(tmp_path / "run1.log", "w")
    first = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT)
    try:
        (work / "inbox").mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(lambda: deliver(files, work / "inbox"))
        await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 1, timeout=240)
        workers = _descendants(first.pid)
        first.send_signal(signal.SIGKILL)  # mid-run: others are queued or calibrating
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    # A bound for workers that outlive it, not a measure (a loaded machine is slow to reap).
    with anyio.move_on_after(60):
        while any(alive(p) for p in workers):
            await anyio.sleep(0.1)
    assert not any(alive(p) for p in workers), "worker processes outlived the killed daemon"

    log2 = open(tmp_path / "run2.log", "w")
    second = subprocess.Popen(cmd, env=env, stdout=log2, stderr=subprocess.STDOUT)
    try:
        ids = {exposure_id(f) for f in files}
        msgs = await wait_for(cfg, ["products"],
                              lambda ms: {p["exposure_id"] for p in products(ms)} >= ids,
                              timeout=240)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=120) == 0, (tmp_path / "run2.log").read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()

    store = ProductStore(work / "products")
    events = products(msgs)
    listed = set()
    for eid in ids:
        mine = [e for e in events if e["exposure_id"] == eid]
        assert len({e.event_id for e in mine}) == 1, "one work item, one event id"
        name = parse_exposure_name(eid)
        done = store.lookup(name.program, name.observation, name=eid, stage="detector1",
                            work_id=mine[0]["work_id"])
        assert done is not None, f"{eid}: products missing or corrupt after the crash"
    # Every record of every stage (stage 2 may have run too) must hold up.
    for record in (work / "products").rglob(".provenance/*.json"):
        name, stage = record.name.removesuffix(".json").rsplit(".", 1)
        exp = parse_exposure_name(name)
        done = store.lookup(exp.program, exp.observation, name=name, stage=stage)
        assert done is not None, f"{record}: outputs do not match the record"
        listed.update(o["path"] for o in done.event["outputs"])
    on_disk = {str(p) for p in (work / "products").rglob("*.fits") if ".tmp" not in p.parts}
    listed = {p for p in listed if p.endswith(".fits")}
    assert on_disk == listed, "a product file that no provenance record accounts for"
    for path in on_disk:
        with fits.open(path) as hdul:
            hdul.verify("exception")
    leftovers = [p for p in (work / "products").rglob(".tmp/*")]
    assert leftovers == [], leftovers
    assert await read_all(cfg, ["deadletter"]) == []
