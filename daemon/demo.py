"""``calstream demo``: the whole chain on the embedded default.

Embedded broker, a synthetic NIRCam program with its own reference files and
offline CRDS cache, files delivered into the inbox as a downlink would (some
in pieces), detector1 in warm workers; waits for every rate product and prints
what happened.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import time
from pathlib import Path

import anyio

from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec
from calstream.topics import contract

from . import kafka
from .config import load
from .runtime import Daemon

log = logging.getLogger("calstream.demo")

_MARKER = ".calstream-demo"


def _fresh(work_dir: Path) -> None:
    """Clear the demo's directory, refusing to clear one that is not the demo's."""
    if work_dir.exists() and any(work_dir.iterdir()):
        if not (work_dir / _MARKER).exists():
            raise SystemExit(f"calstream demo: {work_dir} exists and is not a demo directory; "
                             "choose another --work-dir")
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / _MARKER).write_text("created by calstream demo; cleared by the next demo run\n")


def run_demo(*, work_dir: Path, workers: int = 2, timeout: float = 600.0,
             metrics_address: str = "127.0.0.1:0", seed: int = 1) -> int:
    t0 = time.monotonic()
    work_dir = Path(work_dir).absolute()
    _fresh(work_dir)
    # Exposure 3 has provisional pointing: detector1 still runs (quick-look).
    spec = ProgramSpec(planned=(3,))
    print(f"calstream demo: simulating program {spec.program} "
          f"({spec.dithers} dithers x {len(spec.detectors)} detector(s), {spec.subarray}) "
          f"with reference files and an offline CRDS cache ...", flush=True)
    kit = build_kit(work_dir / "synthetic", spec, seed=seed)
    setup_seconds = time.monotonic() - t0
    if os.environ.get("CRDS_PATH") and os.environ["CRDS_PATH"] != kit.crds_env["CRDS_PATH"]:
        log.warning("the demo uses its own synthetic CRDS cache, not CRDS_PATH=%s",
                    os.environ["CRDS_PATH"])
    os.environ.update(kit.crds_env)
    cfg = load(None, env={}, flags={"work_dir": work_dir, "workers": workers,
                                    "metrics_address": metrics_address,
                                    "fast_group_timing": True, "settle_seconds": 0.3})
    daemon = Daemon(cfg)
    daemon.start_broker()
    expected = {parse_id(p) for p in kit.uncal_files}
    state = {"products": {}, "dead": {}}
    try:
        anyio.run(_main, daemon, kit.uncal_files, expected, state, timeout)
    finally:
        daemon.stop_broker()
    return _summary(daemon, cfg, kit, expected, state, setup_seconds, time.monotonic() - t0)


def parse_id(path: Path) -> str:
    from calstream.steps.naming import parse_exposure_name

    return parse_exposure_name(path.name).exposure_id


async def _main(daemon: Daemon, files: list[Path], expected: set[str], state: dict,
                timeout: float) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        print(f"calstream demo: broker {daemon.bootstrap} (embedded tansu); metrics "
              f"http://{daemon.ops.address}/metrics; CRDS context {daemon.crds_context}",
              flush=True)
        # A downlink: files one after another, every other one written in pieces.
        inbox = daemon.cfg.inbox

        def downlink() -> None:
            for i, f in enumerate(files):
                deliver([f], inbox, pieces=3 if i % 2 else 1, piece_delay=0.4 if i % 2 else 0.0)
                time.sleep(0.2)

        tg.start_soon(anyio.to_thread.run_sync, downlink)
        with anyio.move_on_after(timeout) as scope:
            await _collect(daemon, expected, state)
        if scope.cancelled_caught:
            state["timed_out"] = True
        tg.cancel_scope.cancel()


async def _collect(daemon: Daemon, expected: set[str], state: dict) -> None:
    names = [daemon.topics.name("products"), daemon.topics.name("deadletter")]
    async for _record, msg in kafka.read_topics(daemon.cfg, names):
        if isinstance(msg, contract.InvalidMessage):
            continue
        eid = msg.get("exposure_id")
        if msg.type == "product" and msg["stage"] == "detector1":
            state["products"][eid] = msg.body
        elif msg.type == "dead_letter":
            state["dead"][eid or msg.get("path")] = msg.body
        if expected <= set(state["products"]) | set(state["dead"]):
            return


def _summary(daemon, cfg, kit, expected, state, setup_seconds, total_seconds) -> int:
    products, dead = state["products"], state["dead"]
    print()
    print(f"{'exposure':40} {'ENGQLPTG':28} {'outcome':8} {'products':16} {'det1 s':>6} "
          f"{'latency s':>9}")
    durations, latencies = [], []
    for eid in sorted(expected):
        p = products.get(eid)
        if p is None:
            reason = dead.get(eid, {}).get("reason", "no product event")
            print(f"{eid:40} {'':28} {'MISSING':8} {reason}")
            continue
        latency = contract.parse_time(p["emitted_at"]).timestamp() - \
            contract.parse_time(p["arrived_at"]).timestamp()
        durations.append(p["duration_seconds"] or 0.0)
        latencies.append(latency)
        flag = " (provisional)" if p["pointing_provisional"] else ""
        print(f"{eid:40} {p['pointing_quality'] + flag:28} {p['outcome']:8} "
              f"{','.join(o['suffix'] for o in p['outputs']):16} "
              f"{p['duration_seconds'] or 0:6.1f} {latency:9.1f}")
    print()
    if durations:
        print(f"detector1: {len(durations)} run(s), median {statistics.median(durations):.1f} s in "
              f"the pipeline, median {statistics.median(latencies):.1f} s from arrival to product "
              f"event ({cfg.workers} warm workers)")
    print(f"set-up (synthetic data, references, CRDS cache): {setup_seconds:.1f} s; "
          f"whole demo {total_seconds:.1f} s")
    print(f"inbox:      {cfg.inbox}")
    print(f"products:   {cfg.products}")
    print(f"quarantine: {cfg.quarantine}")
    print(f"CRDS cache: {kit.crds_env['CRDS_PATH']} (context {kit.context})")
    missing = sorted(expected - set(products))
    bad = [e for e in expected if e in products and products[e]["outcome"] != "success"]
    if missing or bad or state.get("timed_out"):
        why = []
        if missing:
            why.append(f"{len(missing)} exposure(s) without a rate product: {', '.join(missing)}")
        if bad:
            why.append(f"{len(bad)} exposure(s) skipped: {', '.join(bad)}")
        if state.get("timed_out"):
            why.append("timed out waiting for products")
        print("calstream demo: FAILED: " + "; ".join(why))
        return 1
    print(f"calstream demo: OK: {len(expected)} exposures calibrated by detector1")
    return 0
