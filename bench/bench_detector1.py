"""Daemon vs. the sequential baseline on the same N synthetic exposures.

Baseline: ``strun calwebb_detector1 FILE`` one file after another, as a person
or a cron job would. Daemon: ``calstream`` on the embedded broker with warm
workers, all N files dropped into its inbox at once. Both run on this machine,
one after the other, on the same files and the same CRDS cache.

A second baseline, one warm Python process calling Detector1Pipeline in a
loop, shows what the daemon gains beyond not re-importing jwst per file.

Reported: throughput ratios (daemon / each baseline), the daemon's overhead per
exposure (arrival-to-product latency minus the time inside the pipeline, on
an idle daemon, one file at a time), and peak memory per worker.

    python bench/bench_detector1.py [--exposures 8] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from calstream.daemon.doers import kafka
from calstream.daemon.operations.config import load
from calstream.daemon.runtime import Daemon
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec
from calstream.topics import contract


def baseline(files: list[Path], out: Path) -> float:
    strun = Path(sys.executable).with_name("strun")
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    for f in files:
        subprocess.run([str(strun), "calwebb_detector1", str(f), "--output_dir", str(out)],
                       check=True, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


_WARM_LOOP = """
import sys, time
from jwst.pipeline import Detector1Pipeline
out = sys.argv[1]
Detector1Pipeline.call(sys.argv[2], output_dir=out, save_results=True)  # warm-up, not timed
start = time.monotonic()
for f in sys.argv[3:]:
    Detector1Pipeline.call(f, output_dir=out, save_results=True)
print(time.monotonic() - start)
"""


def warm_loop(files: list[Path], warmup: Path, out: Path) -> float:
    """A harder baseline: one warm process, Detector1Pipeline.call in a loop.

    Separates what the daemon gains by design (parallel warm workers, no
    per-file import) from what any long-lived process would gain.
    """
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", _WARM_LOOP, str(out), str(warmup),
                           *map(str, files)], check=True, cwd=out, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


async def _products(daemon: Daemon, want: set[str], seen: dict) -> None:
    async for _rec, msg in kafka.read_topics(daemon.cfg, [daemon.topics.name("products")]):
        if isinstance(msg, contract.Message) and msg.get("exposure_id") in want:
            seen[msg["exposure_id"]] = msg.body
            if want <= set(seen):
                return


def run_daemon(files: list[Path], single: list[Path], work: Path, workers: int) -> dict:
    # Only the roles the baseline does: stage 2 would compete for the cores.
    cfg = load(None, env={}, flags={"work_dir": work, "workers": workers,
                                    "roles": ["watcher", "detector1"],
                                    "metrics_address": "127.0.0.1:0", "fast_group_timing": True})
    daemon = Daemon(cfg)
    daemon.start_broker()
    result: dict = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            # Warm-up: one exposure through the whole chain (workers import jwst).
            seen: dict = {}
            deliver(single[:1], cfg.inbox)
            await _products(daemon, {parse_exposure_name(single[0].name).exposure_id}, seen)
            # Idle overhead: one file at a time, each waited for.
            overheads = []
            for f in single[1:]:
                eid = parse_exposure_name(f.name).exposure_id
                deliver([f], cfg.inbox)
                await _products(daemon, {eid}, seen)
                p = seen[eid]
                latency = (contract.parse_time(p["emitted_at"]).timestamp()
                           - contract.parse_time(p["arrived_at"]).timestamp())
                overheads.append(latency - p["duration_seconds"])
            # Throughput: all files at once.
            want = {parse_exposure_name(f.name).exposure_id for f in files}
            start = time.monotonic()
            await anyio.to_thread.run_sync(lambda: deliver(files, cfg.inbox))
            await _products(daemon, want, seen)
            result["wall"] = time.monotonic() - start
            result["overheads"] = overheads
            result["pipeline"] = [seen[e]["duration_seconds"] for e in want]
            from prometheus_client import generate_latest
            from prometheus_client.parser import text_string_to_metric_families

            text = generate_latest(daemon.metrics.registry).decode()
            result["worker_rss"] = {s.labels["worker"]: s.value
                                    for fam in text_string_to_metric_families(text)
                                    for s in fam.samples
                                    if s.name == "calstream_worker_peak_rss_bytes"}
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        daemon.stop_broker()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--exposures", type=int, default=8)
    ap.add_argument("--overhead-samples", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="calstream-bench-"))
    try:
        # Two programs: one for the throughput run, one for the overhead run,
        # so nothing is "already calibrated" in the daemon's product store.
        kit = build_kit(tmp / "kit", ProgramSpec(dithers=args.exposures), seed=11)
        single = build_kit(tmp / "kit2", ProgramSpec(program="04321",
                                                     dithers=args.overhead_samples + 1),
                           seed=12, references=False).uncal_files
        os.environ.update(kit.crds_env)
        files = kit.uncal_files
        n = len(files)
        print(f"{n} exposures, {ProgramSpec().subarray}; baseline: strun one after another ...",
              flush=True)
        base = baseline(files, tmp / "baseline")
        print("baseline 2: one warm process, Detector1Pipeline.call in a loop ...", flush=True)
        warm = warm_loop(files, single[0], tmp / "warm")
        print(f"daemon: {args.workers} warm workers, embedded broker ...", flush=True)
        d = run_daemon(files, single, tmp / "daemon", args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    figures = {
        "exposures": n, "workers": args.workers, "cores": os.cpu_count(),
        "baseline_seconds": round(base, 2), "daemon_seconds": round(d["wall"], 2),
        "baseline_throughput_per_min": round(60 * n / base, 2),
        "daemon_throughput_per_min": round(60 * n / d["wall"], 2),
        "throughput_ratio": round(base / d["wall"], 2),
        "warm_loop_seconds": round(warm, 2),
        "throughput_ratio_vs_warm_loop": round(warm / d["wall"], 2),
        "median_pipeline_seconds": round(statistics.median(d["pipeline"]), 2),
        "overhead_seconds_median": round(statistics.median(d["overheads"]), 3),
        "overhead_seconds_max": round(max(d["overheads"]), 3),
        "worker_peak_rss_mib": {k: round(v / 2**20) for k, v in sorted(d["worker_rss"].items())},
    }
    print(json.dumps(figures, indent=1))
    print(f"\nthroughput ratio {figures['throughput_ratio']}x vs strun one after another "
          f"(target >= 2x), {figures['throughput_ratio_vs_warm_loop']}x vs one warm process; "
          f"overhead per exposure {figures['overhead_seconds_median']} s median (target < 0.5 s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
