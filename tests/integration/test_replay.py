"""Replay, namespaces, promotion and live-beats-replay on the real embedded broker,
with the real pipelines and real crds against two synthetic contexts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import anyio
import pytest
from astropy.io import fits

from calstream.daemon.deciders.replay_selection import Selection
from calstream.daemon.operations.replay import run_replay
from calstream.steps.fitsfile import file_digest
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.crds_cache import build_crds_cache
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.program import ProgramSpec, simulate_program
from calstream.steps.synthetic.references import write_visit_reference_files
from calstream.topics import contract

from .support import (
    UP_TO_STAGE2,
    cli,
    daemon_config,
    in_namespace,
    metric,
    read_all,
    running_daemon,
    scrape,
    until,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "ctx2-reprocessing"


def eid(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


def live_tree(products_dir: Path) -> dict[str, str]:
    """Every live product file and its digest (the namespaces' trees excluded)."""
    found = {}
    for top, dirs, files in os.walk(products_dir):  # does not follow `current`
        rel = Path(top).relative_to(products_dir)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (rel == Path(".")
                                                                    and d == "namespaces")]
        for f in files:
            if f.endswith(".fits"):
                found[str(rel / f)] = file_digest(Path(top) / f)
    return found


@pytest.fixture(scope="module")
def second_context(kit, tmp_path_factory):
    """Another context in the kit's cache, selecting freshly written references;
    not operational, so it is used only when asked for by name."""
    refs = write_visit_reference_files(tmp_path_factory.mktemp("refs2"), [ProgramSpec()])
    return build_crds_cache(kit.crds_env["CRDS_PATH"], refs, context_number=2,
                            operational=False)


async def test_replay_into_a_namespace_with_another_context_then_again_then_promote(
        tmp_path, broker, kit, second_context, unique_prefix):
    assert second_context != kit.context
    # The session kit's SUB160 visit never looks complete from its headers, so
    # no mosaic closes within the test (an hour's quiet period). Stage 3 in a
    # namespace, from raw and from stage 2, is tested in test_stage3.py. So no
    # stage-3 pool (each pool warms a jwst import at start).
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=UP_TO_STAGE2)
    # Two of the visit's exposures: every step below is about more than one
    # item, none about four, and each exposure is calibrated five times
    # (live, the namespace's detector1 and stage 2, stage 2 again).
    files = kit.uncal_files[:2]
    ids = {eid(f) for f in files}

    async with running_daemon(cfg) as daemon:
        await anyio.to_thread.run_sync(lambda: deliver(files, cfg.inbox))
        await wait_for(cfg, ["products"], lambda ms: {
            p["exposure_id"] for p in in_namespace(ms, "stage2", "live")} >= ids, timeout=300)
        live_before = await anyio.to_thread.run_sync(live_tree, cfg.products)
        assert len(live_before) >= 3 * len(ids)  # rate, rateints, cal, i2d, ...

        # 0. A dry run lists what would run and publishes nothing.
        dry = await anyio.to_thread.run_sync(lambda: cli(
            cfg, "replay", "--namespace", NAMESPACE, "--program", "01234", "--dry-run"))
        assert dry.returncode == 0, dry.stderr
        assert f"would replay {len(ids)} item(s)" in dry.stdout
        assert all(i in dry.stdout for i in ids)
        assert not [m for m in await read_all(cfg, ["replay"])]

        # A context the server-less cache lacks is refused before anything is
        # published (each item would fail its run for good).
        missing = await anyio.to_thread.run_sync(lambda: cli(
            cfg, "replay", "--namespace", NAMESPACE, "--crds-context", "jwst_9999.pmap",
            "--program", "01234"))
        assert missing.returncode == 2, missing.stderr
        assert "jwst_9999.pmap is not in the CRDS cache" in missing.stderr
        # (read_all's own markers of the check above are all it finds)
        assert not [m for m in await read_all(cfg, ["replay"])
                    if isinstance(m, contract.Message)]

        # 1. The replay: its report says what it covered.
        done = await anyio.to_thread.run_sync(lambda: cli(
            cfg, "replay", "--namespace", NAMESPACE, "--crds-context", second_context,
            "--program", "01234", "--instrument", "nircam", "--json"))
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["selected"] == report["published"] == len(ids)
        assert report["gaps"] == [] and not report["refused"]
        assert {i["name"] for i in report["items"]} == ids
        covered = [p for p in report["partitions"] if p["count"]]
        assert sum(p["count"] for p in covered) == len(ids)
        for p in covered:
            assert p["first_offset"] <= p["last_offset"] < p["high_watermark"]
            assert p["first_time"] <= p["last_time"]

        msgs = await wait_for(cfg, ["products"], lambda ms: {
            p["exposure_id"] for p in in_namespace(ms, "detector1", NAMESPACE)} >= ids,
            timeout=300)
        replayed = {p["exposure_id"]: p for p in in_namespace(msgs, "detector1", NAMESPACE)}
        for event in replayed.values():
            assert event["crds_context"] == second_context
            assert event["replay"]["replay_id"] == report["replay_id"]
            assert event["replay"]["namespace"] == NAMESPACE
            for out in event["outputs"]:
                path = Path(out["path"])
                assert path.is_relative_to(cfg.products / "namespaces" / NAMESPACE)
                assert file_digest(path) == out["digest"]
                with fits.open(path) as hdul:  # what crds really used
                    assert hdul[0].header["CRDS_CTX"] == second_context
        # The planner carries the namespace on: stage 2 from the namespace's
        # own rate files, with the replay's context, in its own tree.
        everything = await wait_for(cfg, ["products"], lambda ms: {
            p["exposure_id"] for p in in_namespace(ms, "stage2", NAMESPACE)} >= ids,
            timeout=300)
        ns_rates = {o["digest"] for p in replayed.values() for o in p["outputs"]}
        for event in in_namespace(everything, "stage2", NAMESPACE):
            assert event["crds_context"] == second_context, event["product_name"]
            assert event["replay"]["replay_id"] == report["replay_id"]
            assert all(Path(o["path"]).is_relative_to(cfg.products / "namespaces" / NAMESPACE)
                       for o in event["outputs"])
        for event in in_namespace(everything, "stage2", NAMESPACE):
            assert {i["digest"] for i in event["inputs"]} <= ns_rates
        assert await anyio.to_thread.run_sync(live_tree, cfg.products) == live_before

        # 2. The same replay again calibrates nothing: the stored events come back.
        # Counted from here: a run is counted once its product event's send has
        # returned, after a reader may see the event (the last stage-2 run of
        # step 1 was counted after this read and taken for a new calibration).
        await until(lambda: metric(scrape(daemon.ops.address), "calstream_in_flight") == 0)
        before = scrape(daemon.ops.address)
        again = await anyio.to_thread.run_sync(lambda: cli(
            cfg, "replay", "--namespace", NAMESPACE, "--crds-context", second_context,
            "--program", "01234", "--instrument", "NIRCAM", "--json"))
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["published"] == len(ids)
        msgs = await wait_for(cfg, ["products"], lambda ms: len(
            in_namespace(ms, "detector1", NAMESPACE)) >= 2 * len(ids), timeout=120)
        runs = "calstream_stage_runs_total"
        # A duplicate is counted once its event is out: waited for, not read
        # at the moment a reader sees the last event.
        await until(lambda: metric(scrape(daemon.ops.address), runs, stage="detector1",
                                   outcome="duplicate") - metric(before, runs, stage="detector1",
                                                                 outcome="duplicate") >= len(ids))
        await anyio.sleep(3)  # what the planner might make of the re-emitted events
        after = scrape(daemon.ops.address)
        assert metric(after, runs, outcome="success") == metric(before, runs, outcome="success")
        assert metric(after, runs, stage="detector1", outcome="duplicate") - \
            metric(before, runs, stage="detector1", outcome="duplicate") == len(ids)
        events = in_namespace(msgs, "detector1", NAMESPACE)
        assert {e.event_id for e in events} == {e.event_id for e in replayed.values()}

        # 3. A later stage only, from the existing live products: stage 2 again.
        stage2 = await anyio.to_thread.run_sync(lambda: cli(
            cfg, "replay", "--from", "stage2", "--namespace", "s2-ctx2", "--crds-context",
            second_context, "--json"))
        assert stage2.returncode == 0, stage2.stderr
        s2report = json.loads(stage2.stdout)
        assert s2report["target_topic"].endswith("work.stage2.replay")
        assert {i["name"] for i in s2report["items"]} == ids
        msgs = await wait_for(cfg, ["products"], lambda ms: {
            p["exposure_id"] for p in in_namespace(ms, "stage2", "s2-ctx2")} >= ids, timeout=300)
        live_rates = {o["digest"] for p in in_namespace(msgs, "detector1", "live")
                      for o in p["outputs"]}
        for event in in_namespace(msgs, "stage2", "s2-ctx2"):
            assert event["crds_context"] == second_context and event["outcome"] == "success"
            assert {i["digest"] for i in event["inputs"]} <= live_rates
            cal = next(o["path"] for o in event["outputs"] if o["suffix"] == "cal")
            assert Path(cal).is_relative_to(cfg.products / "namespaces" / "s2-ctx2")
            with fits.open(cal) as hdul:
                assert hdul[0].header["CRDS_CTX"] == second_context
        assert await anyio.to_thread.run_sync(live_tree, cfg.products) == live_before

    # 4. Promote: `current` switches to the namespace's tree, and back.
    current = cfg.products / "current"
    assert os.readlink(current) == "."
    promoted = await anyio.to_thread.run_sync(lambda: cli(
        cfg, "promote", NAMESPACE, "--reason", "context 2"))
    assert promoted.returncode == 0, promoted.stderr
    assert os.readlink(current) == f"namespaces/{NAMESPACE}"
    some = next(iter(ids))
    with fits.open(current / "01234" / "001" / f"{some}_rate.fits") as hdul:
        assert hdul[0].header["CRDS_CTX"] == second_context
    announced = [m for m in await read_all(cfg, ["promotions"])
                 if isinstance(m, contract.Message)]
    assert [(m["namespace"], m["previous"]) for m in announced] == [(NAMESPACE, "live")]
    assert announced[0]["records"] >= len(ids)
    assert [r["replay_id"] for r in announced[0]["replays"]] != []
    back = await anyio.to_thread.run_sync(lambda: cli(cfg, "promote", "live"))
    assert back.returncode == 0, back.stderr
    assert os.readlink(current) == "."
    with fits.open(current / "01234" / "001" / f"{some}_rate.fits") as hdul:
        assert hdul[0].header["CRDS_CTX"] == kit.context
    assert await anyio.to_thread.run_sync(live_tree, cfg.products) == live_before
    refused = await anyio.to_thread.run_sync(lambda: cli(cfg, "promote", "never-made"))
    assert refused.returncode == 2 and "no products" in refused.stderr


def log_start(path: Path) -> dt.datetime:
    """When a run began: the first line of its pipeline log."""
    first = path.read_text().splitlines()[0]
    return dt.datetime.strptime(first[:23], "%Y-%m-%d %H:%M:%S,%f")


async def test_a_live_exposure_goes_ahead_of_a_replay_in_progress(
        tmp_path, broker, kit, unique_prefix):
    files = simulate_program(tmp_path / "uncal", dataclasses.replace(ProgramSpec(), dithers=13),
                             seed=11)
    bulk, late = files[:12], files[12]
    # Two workers: the live run goes ahead of a queue that both are busy with.
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["watcher", "detector1"],
                        workers=2)
    async with running_daemon(cfg):
        await anyio.to_thread.run_sync(lambda: deliver(bulk, cfg.inbox))
        await wait_for(cfg, ["products"],
                       lambda ms: len(in_namespace(ms, "detector1", "live")) >= len(bulk),
                       timeout=300)
        report = await run_replay(cfg, source="raw", selection=Selection(), namespace="bulk",
                                  crds_context=None)
        assert report["published"] == len(bulk)
        await wait_for(cfg, ["products"],
                       lambda ms: len(in_namespace(ms, "detector1", "bulk")) >= 2, timeout=120)
        await anyio.to_thread.run_sync(lambda: deliver([late], cfg.inbox))
        msgs = await wait_for(cfg, ["products"], lambda ms: eid(late) in {
            p["exposure_id"] for p in in_namespace(ms, "detector1", "live")}, timeout=120)
        done_at_live = len(in_namespace(msgs, "detector1", "bulk"))
        final = await wait_for(cfg, ["products"], lambda ms: len(
            in_namespace(ms, "detector1", "bulk")) >= len(bulk), timeout=300)
        announced = next(m for m in await read_all(cfg, ["raw"])
                         if isinstance(m, contract.Message) and m.get("exposure_id") == eid(late))
    live_event = next(p for p in in_namespace(final, "detector1", "live")
                      if p["exposure_id"] == eid(late))
    live_started = log_start(Path(live_event["log_path"]))
    bulk_started = sorted(log_start(Path(p["log_path"]))
                          for p in in_namespace(final, "detector1", "bulk"))
    # Replayed items were still waiting when the live one arrived, and it went ahead of them.
    assert done_at_live < len(bulk)
    later = [t for t in bulk_started if t > live_started]
    assert len(later) >= 2, (live_started, bulk_started)
    # It waited at most for the runs in progress, not for the queue: at most
    # one replayed run per worker started after it was announced and before
    # it did (taken before the live record was fetched). Counted from the
    # runs' starts: how many ended meanwhile depends on how long its own run
    # took, which a loaded machine stretches. From its announcement, not its
    # arrival: the door's look at the file (seconds on a loaded machine: 6 s
    # once, two replayed runs ending meanwhile) is not the consumer's queue.
    announced_at = contract.parse_time(announced["emitted_at"]).astimezone().replace(tzinfo=None)
    jumped = [t for t in bulk_started if announced_at <= t < live_started]  # logs: local time
    assert len(jumped) <= cfg.workers, (announced_at, live_started, bulk_started)
