"""Live beats replay: a live exposure's latency during a large replay, as a ratio.

One daemon (embedded broker, watcher + detector1, 2 warm workers) on this
machine, three measurements on the same kind of exposure:

1. **baseline, idle**: a live exposure dropped into an idle daemon; its
   arrival-to-product latency is "one pipeline run" plus the daemon's overhead;
2. **during a replay**: N exposures are replayed (`calstream replay`, into a
   namespace) and, once the replay is under way, live exposures are dropped
   in one at a time; each one's arrival-to-product latency;
3. **without priority** (what it would be if replayed work were ordinary
   work): the same N exposures arrive as live work, and a live exposure is
   dropped in behind them.

Reported: the ratios (2) / (1) and (3) / (1). The goal of issue 7 is that (2)
stays within about one extra in-flight run of (1), i.e. a ratio ≲ 2,
whatever N is; (3) grows with N.

    python bench/bench_priority.py [--replayed 30] [--live 3] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from calstream.daemon.doers import kafka
from calstream.daemon.operations.config import load
from calstream.daemon.operations.replay import Selection, run_replay
from calstream.daemon.runtime import Daemon
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec
from calstream.topics import contract


def eid(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


async def _wait(daemon: Daemon, done) -> list[dict]:
    seen: list[dict] = []
    async for _rec, msg in kafka.read_topics(daemon.cfg, [daemon.topics.name("products")]):
        if isinstance(msg, contract.Message) and msg.type == "product":
            seen.append(msg.body)
            if done(seen):
                return seen
    raise AssertionError("unreachable")


def latency(p: dict) -> float:
    return (contract.parse_time(p["emitted_at"]).timestamp()
            - contract.parse_time(p["arrived_at"]).timestamp())


def run(work: Path, bulk: list[Path], probes: list[Path], flood: list[Path], workers: int,
        n_live: int) -> dict:
    cfg = load(None, env={}, flags={"work_dir": work, "workers": workers,
                                    "roles": ["watcher", "detector1"],
                                    "metrics_address": "127.0.0.1:0", "fast_group_timing": True})
    daemon = Daemon(cfg)
    daemon.start_broker()
    out: dict = {}

    def live_done(ids):
        return lambda ms: ids <= {p["exposure_id"] for p in ms if p["namespace"] == "live"}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            # Warm-up and the replay's source: the bulk exposures, live, once.
            await anyio.to_thread.run_sync(lambda: deliver(bulk, cfg.inbox))
            await _wait(daemon, live_done({eid(f) for f in bulk}))
            # 1. idle baseline
            idle = []
            for f in probes[:2]:
                deliver([f], cfg.inbox)
                ms = await _wait(daemon, live_done({eid(f)}))
                idle.append(next(p for p in ms if p["exposure_id"] == eid(f)))
            # 2. during a replay of the bulk exposures
            await run_replay(daemon.cfg, source="raw", selection=Selection(), namespace="bench",
                             crds_context=None)
            during = []
            for i, f in enumerate(probes[2:2 + n_live]):
                await _wait(daemon, lambda ms, k=i: sum(
                    p["namespace"] == "bench" for p in ms) >= 2 + k * workers * 2)
                deliver([f], cfg.inbox)
                ms = await _wait(daemon, live_done({eid(f)}))
                p = next(p for p in ms if p["exposure_id"] == eid(f))
                p["replay_left"] = len(bulk) - sum(q["namespace"] == "bench" for q in ms)
                during.append(p)
            ms = await _wait(daemon, lambda ms: sum(p["namespace"] == "bench" for p in ms)
                             >= len(bulk))
            out["replay_done"] = sum(p["namespace"] == "bench" for p in ms)
            out["replay_runs"] = [p["duration_seconds"] for p in ms if p["namespace"] == "bench"]
            # 3. the same amount of work as ordinary live work, then one more
            await anyio.to_thread.run_sync(lambda: deliver(flood, cfg.inbox))
            last = probes[2 + n_live]
            deliver([last], cfg.inbox)
            ms = await _wait(daemon, live_done({eid(last)}))
            out["fifo"] = next(p for p in ms if p["exposure_id"] == eid(last))
            await _wait(daemon, live_done({eid(f) for f in flood}))
            out["idle"], out["during"] = idle, during
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        daemon.stop_broker()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--replayed", type=int, default=30)
    ap.add_argument("--live", type=int, default=3, help="live exposures dropped into the replay")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="calstream-bench-priority-"))
    try:
        kit = build_kit(tmp / "kit", ProgramSpec(dithers=args.replayed), seed=21)
        probes = build_kit(tmp / "probes", ProgramSpec(program="04321", dithers=args.live + 3),
                           seed=22, references=False).uncal_files
        flood = build_kit(tmp / "flood", ProgramSpec(program="05432", dithers=args.replayed),
                          seed=23, references=False).uncal_files
        os.environ.update(kit.crds_env)
        print(f"{args.replayed} replayed exposures, {args.live} live probes, "
              f"{args.workers} workers ...", flush=True)
        t0 = time.monotonic()
        r = run(tmp / "daemon", kit.uncal_files, probes, flood, args.workers, args.live)
        wall = time.monotonic() - t0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    idle = statistics.median(latency(p) for p in r["idle"])
    during = [latency(p) for p in r["during"]]
    pipeline = statistics.median(p["duration_seconds"] for p in r["idle"] + r["during"])
    figures = {
        "replayed": args.replayed, "workers": args.workers, "cores": os.cpu_count(),
        "pipeline_seconds_median": round(pipeline, 2),
        "idle_latency_seconds": round(idle, 2),
        "during_replay_latency_seconds": [round(x, 2) for x in during],
        "replay_items_left_when_live_done": [p["replay_left"] for p in r["during"]],
        "ratio_during_replay_vs_idle_median": round(statistics.median(during) / idle, 2),
        # Waiting time (latency minus the probe's own run) in replayed runs:
        # at most 1 means it waited for no more than the run in progress.
        "replay_run_seconds_median": round(statistics.median(r["replay_runs"]), 2),
        "wait_in_replay_runs": [round((latency(p) - p["duration_seconds"])
                                      / statistics.median(r["replay_runs"]), 2)
                                for p in r["during"]],
        "ratio_during_replay_vs_idle_max": round(max(during) / idle, 2),
        "without_priority_latency_seconds": round(latency(r["fifo"]), 2),
        "ratio_without_priority_vs_idle": round(latency(r["fifo"]) / idle, 2),
        "without_priority_wait_in_runs": round((latency(r["fifo"]) - r["fifo"]["duration_seconds"])
                                               / statistics.median(r["replay_runs"]), 2),
        "wall_seconds": round(wall, 1),
    }
    print(json.dumps(figures, indent=1))
    print(f"\nlive latency during a {args.replayed}-exposure replay: "
          f"{figures['ratio_during_replay_vs_idle_median']}x the idle one-run latency (median, "
          f"max {figures['ratio_during_replay_vs_idle_max']}x), having waited "
          f"{figures['wait_in_replay_runs']} runs; without priority "
          f"{figures['ratio_without_priority_vs_idle']}x, waiting "
          f"{figures['without_priority_wait_in_runs']} runs")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
