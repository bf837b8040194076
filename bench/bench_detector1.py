"""The daemon's detector1 throughput against the machine's limit and against strun.

Four setups on the same N synthetic exposures, run INTERLEAVED and repeated
(round 1: strun, limit, pair, daemon; round 2: limit, pair, daemon, strun; ...), so that a
change of load on a shared machine hits every setup alike and the ratios
within a round stay meaningful:

* **strun**: ``strun calwebb_detector1 FILE`` one file after another (a
  person or a cron job);
* **limit**: one warm process (jwst imported, ``gc.freeze()`` as a worker
  does) runs each file ALONE; the machine's limit is ``cores`` such runs at
  once with nothing lost: N x (median run) / cores;
* **pair**: one such warm process per core (baselines.py); the files are
  run alone, one process after another, then one in every process at once,
  step by step, so that alone and together are measured side by side. The
  factor (run alone / runs together) is the share of the limit that bare
  runs at once reach on this machine: what they cost each other through the
  cores' shared cache and memory. ``daemon / limit / factor`` is then the
  share of what is left that the daemon reaches;
* **daemon**: ``calstream`` on the embedded broker (watcher + detector1, warm
  workers: each has run one file untimed, as the limit's process has), a
  fresh work directory per round; all N files copied beside its inbox
  (untimed), then moved in at once, timed from the move to the last product
  event.

Before each setup the disk is synced (untimed), so that no setup pays for
the write-back of another's outputs. Reported, as medians with the spread over rounds: wall and CPU time of each
setup, the ratios daemon/limit and daemon/strun of each round, the fixed cost
per exposure (one file at a time on an idle daemon: the product event's
``emitted_at - arrived_at - duration_seconds``), the workers' peak memory
against the direct run's, and whether the daemon's products are bit-identical
(every data extension) to the direct ``Detector1Pipeline.call``'s.

    python bench/bench_detector1.py [--exposures 6] [--rounds 3] [--json out.json]
    python bench/bench_detector1.py --full     # 2048x2048, 10 groups (make bench-full)
    python bench/bench_detector1.py --exposures 2 --rounds 2 --multicore 2

``--multicore R`` (on by default with ``--full``) also times one exposure in a
warm process with jwst's ``maximum_cores`` 1 and 2 in turn, R times each,
with wall and CPU time (stcal's pool processes included) and a byte
comparison of the two products.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baselines import run_limit, run_multicore, run_pair, run_strun
from measuring import identical, settle, spread, stage, tree_cpu

HERE = Path(__file__).resolve()

def run_daemon(files: list[Path], single: list[Path], work: Path, workers: int,
               code: Path | None = None) -> dict:
    """``code``: run the daemon of another checkout (a PYTHONPATH holding its
    ``calstream`` package), e.g. the code before a change, side by side."""
    shutil.rmtree(work, ignore_errors=True)
    env = {**os.environ, **({"PYTHONPATH": str(code)} if code else {})}
    done = subprocess.run([sys.executable, str(HERE), "--daemon-round", str(work),
                           "--workers", str(workers), "--singles", *map(str, single),
                           "--files", *map(str, files)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        sys.stderr.write(done.stderr[-6000:])
        done.check_returncode()
    return json.loads(done.stdout.strip().splitlines()[-1])


def daemon_round(work: Path, files: list[Path], single: list[Path], workers: int) -> dict:
    """One daemon, started afresh in this process (``--daemon-round``)."""
    import anyio
    from aiokafka import AIOKafkaConsumer
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from calstream.daemon.doers.kafka.clients import client_options
    from calstream.daemon.operations.config import load
    from calstream.daemon.runtime import Daemon
    from calstream.steps.naming import parse_exposure_name
    from calstream.steps.synthetic.downlink import deliver
    from calstream.topics import contract

    # Only the roles the baselines do: stage 2 would compete for the cores.
    cfg = load(None, env={}, flags={"work_dir": work, "workers": workers,
                                    "roles": ["watcher", "detector1"],
                                    "metrics_address": "127.0.0.1:0", "fast_group_timing": True})
    daemon = Daemon(cfg)
    daemon.start_broker()
    result: dict = {}
    seen: dict = {}

    async def products(want: set[str]) -> None:
        # The bench's own reader, the same whichever checkout's daemon runs.
        # Every time it reports comes from the events themselves (the batch
        # ends at its last product event's emitted_at), so it may see them
        # late: Kafka's 500 ms fetch wait, not 100, because each idle fetch
        # costs tansu ~2 ms of CPU beside the runs it measures (~20 ms a
        # second at 100 ms; bench/README.md, session 16).
        reader = AIOKafkaConsumer(daemon.topics.name("products"), group_id=None,
                                  **client_options(daemon.cfg, held_ms=500),
                                  enable_auto_commit=False,
                                  auto_offset_reset="earliest", fetch_max_wait_ms=500)
        await reader.start()
        try:
            async for record in reader:
                try:
                    msg = contract.decode(record.value)
                except contract.InvalidMessage:
                    continue
                if msg.get("exposure_id") in want:
                    seen.setdefault(msg["exposure_id"], msg.body)
                    if want <= set(seen):
                        return
        finally:
            await reader.stop()

    def exposure(f: Path) -> str:
        return parse_exposure_name(f.name).exposure_id

    def worker_cpu() -> list[float]:
        # user, system: the workers' own account of their tasks (None where
        # a --before checkout has no calstream_worker_cpu_seconds_total)
        return [daemon.metrics.registry.get_sample_value(
            "calstream_worker_cpu_seconds_total", {"stage": "detector1", "mode": m}) or 0.0
            for m in ("user", "system")]

    async def previews_drawn(top) -> int:
        """Wait until no preview is pending; how many were when called."""
        try:
            from calstream.daemon.doers.pending_previews import pending
        except ImportError:  # a --before checkout older than pending previews
            return -1
        at_start = pending(top)
        with anyio.fail_after(600):
            while pending(top):
                await anyio.sleep(0.1)
        return at_start

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            # Each file is written beside the inbox and moved in, as a downlink
            # tool does: the arrival is then its first sight whole, and the
            # fixed cost holds no time of the bench's own copy (84 MB at full
            # frame: 0.2-0.5 s of write and fsync, counted until session 7).
            # Warm-up, one file for each worker at once: as the limit's process
            # runs one file untimed, every worker has run one (imported jwst,
            # grown its heap: steps/worker_memory.py) before the timed batch.
            warm = single[:workers]
            deliver(warm, cfg.inbox, temp_then_rename=True)
            await products({exposure(f) for f in warm})
            fixed, alone = [], []
            for f in single[workers:]:  # the fixed cost: one file at a time, idle daemon
                deliver([f], cfg.inbox, temp_then_rename=True)
                await products({exposure(f)})
                p = seen[exposure(f)]
                latency = (contract.parse_time(p["emitted_at"]).timestamp()
                           - contract.parse_time(p["arrived_at"]).timestamp())
                fixed.append(latency - p["duration_seconds"])
                alone.append(p["duration_seconds"])
            # The batch starts on an idle daemon, as the limit's runs do: the
            # singles' previews (drawn once no calibration is in flight,
            # doers/preview_gate.py) were drawn in the batch's window until
            # session 28, counted in the workers' CPU and holding a worker.
            result["previews_pending"] = await previews_drawn(daemon.store.top)
            # The batch lands at once: copied in beside the inbox untimed, then
            # moved in (a downlink tool's last step). Copying inside the timed
            # window (until session 10) made the daemon wait for the first
            # file's copy and sync (0.2-0.5 s at full frame) and calibrate
            # beside the others' copies, which the limit's runs never paid.
            staged = await anyio.to_thread.run_sync(lambda: stage(files, cfg.inbox))
            cpu, workers_cpu, start = tree_cpu(os.getpid()), worker_cpu(), time.time()
            for temp, final in staged:
                os.replace(temp, final)
            await products({exposure(f) for f in files})
            end = max(contract.parse_time(seen[exposure(f)]["emitted_at"]).timestamp()
                      for f in files)
            result.update(wall=end - start, cpu=tree_cpu(os.getpid()) - cpu,
                          worker_cpu=[b - a for a, b in zip(workers_cpu, worker_cpu(),
                                                            strict=True)],
                          fixed=fixed, alone=alone,
                          pipeline=[seen[exposure(f)]["duration_seconds"]
                                                 for f in files],
                          outputs={exposure(f): [o["path"] for o in seen[exposure(f)]["outputs"]]
                                   for f in files})
            text = generate_latest(daemon.metrics.registry).decode()
            result["worker_peak_rss"] = [s.value for fam in text_string_to_metric_families(text)
                                         for s in fam.samples
                                         if s.name == "calstream_worker_peak_rss_bytes"]
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        daemon.stop_broker()
    (work / "round.json").write_text(json.dumps(result))  # readable while the bench goes on
    return result


def _round_order(order: list[str], r: int) -> list[str]:
    """Round ``r``'s setups: ABC, BCA, CAB, ...; and with --before, the daemon
    first of the two daemons in even rounds, the other first in odd ones.
    The rotation alone ran the daemon just before the --before daemon in three
    rounds of four, and what runs second may find the machine otherwise
    (caches, the previous daemon's last work): in session 19's first SUB160
    comparison the --before daemon was faster in the three rounds where it
    ran second, slower in the one where it ran first."""
    turn = order[r % len(order):] + order[:r % len(order)]
    if "before" in turn:
        a, b = turn.index("daemon"), turn.index("before")
        if (a > b) == (r % 2 == 0):
            turn[a], turn[b] = turn[b], turn[a]
    return turn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--exposures", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--overhead-samples", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="2048x2048 (FULL), 10 groups")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--multicore", type=int, metavar="REPEATS",
                    help="also time one exposure with maximum_cores 1 and 2 in turn, REPEATS "
                         "times each (default: 2 with --full, else off)")
    ap.add_argument("--no-strun", action="store_true",
                    help="leave strun out (at full frame 2-2.5 min a round): the "
                         "daemon against the limit and --before only")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--before", type=Path, metavar="PYTHONPATH",
                    help="also run, in every round, the daemon of the calstream package "
                         "found on this path (the code before a change)")
    ap.add_argument("--daemon-round", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--singles", nargs="*", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--files", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.daemon_round:
        print(json.dumps(daemon_round(args.daemon_round, args.files, args.singles, args.workers)))
        return 0
    n = args.exposures or (4 if args.full else 6)
    rounds = args.rounds or (2 if args.full else 3)
    samples = args.overhead_samples or (2 if args.full else 4)
    size = {"subarray": "FULL", "ngroups": 10} if args.full else {}

    from calstream.steps.synthetic.kit import build_kit
    from calstream.steps.synthetic.program import ProgramSpec

    tmp = Path(tempfile.mkdtemp(prefix="calstream-bench-"))
    cores = os.cpu_count() or 1
    log: dict[str, list] = {"limit": [], "pair": [], "daemon": []} if args.no_strun else \
        {"strun": [], "limit": [], "pair": [], "daemon": []}
    if args.before:
        log["before"] = []
    loads = [os.getloadavg()[0]]
    try:
        kit = build_kit(tmp / "kit", ProgramSpec(dithers=n, **size), seed=11)
        single = build_kit(tmp / "kit2", ProgramSpec(program="04321",
                                                     dithers=samples + args.workers, **size),
                           seed=12, references=False).uncal_files
        os.environ.update(kit.crds_env)
        files = kit.uncal_files
        setups = {"strun": lambda r: run_strun(files, tmp / f"strun{r}"),
                  "limit": lambda r: run_limit(files, single[0], tmp / f"limit{r}", cores),
                  "pair": lambda r: run_pair(files, single[0], tmp / f"pair{r}", cores),
                  "daemon": lambda r: run_daemon(files, single, tmp / f"daemon{r}", args.workers)}
        if args.no_strun:
            del setups["strun"]
        if args.before:
            setups["before"] = lambda r: run_daemon(files, single, tmp / f"before{r}",
                                                    args.workers, args.before)
        order = list(setups)
        print(f"{n} exposures ({ProgramSpec(**size).subarray}, "
              f"{ProgramSpec(**size).ngroups} groups), {rounds} rounds, {cores} cores", flush=True)
        for r in range(rounds):
            for name in _round_order(order, r):
                settle()
                figures = setups[name](r)
                log[name].append(figures)
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1}: {name:6s} wall {figures['wall']:7.2f} s  "
                      f"cpu {figures['cpu']:7.2f} s  (load {loads[-1]:.1f})", flush=True)
        compared, differing = identical(log["daemon"][0]["outputs"], tmp / "limit0")
        repeats = args.multicore if args.multicore is not None else (2 if args.full else 0)
        multicore = run_multicore(files[0], tmp / "multicore", repeats) if repeats else None
        if multicore:
            print(f"one exposure, 2 cores vs 1: {multicore['speedup']['median']}x faster "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    d, lim, pair, s = log["daemon"], log["limit"], log["pair"], log.get("strun")
    fixed = [x for r in d for x in r["fixed"]]
    worker_peak = max(x for r in d for x in r["worker_peak_rss"])
    direct_peak = max(r["peak_rss"] for r in lim)
    figures = {
        "exposures": n, "rounds": rounds, "workers": args.workers, "cores": cores,
        "size": ProgramSpec(**size).subarray, "ngroups": ProgramSpec(**size).ngroups,
        "load_average": spread(loads, 1),
        "wall_seconds": {k: spread([r["wall"] for r in v]) for k, v in log.items()},
        "cpu_seconds": {k: spread([r["cpu"] for r in v]) for k, v in log.items()},
        "daemon_fraction_of_limit": spread([a["wall"] / b["wall"] for a, b in zip(lim, d, strict=True)], 3),
        # The limit split in two: what two runs at once cost each other on
        # this machine (the pair's factor, run alone against run together,
        # side by side), and what is left to the daemon (its fraction / factor).
        "pair_fraction_of_limit": spread([x for r in pair for x in r["factors"]], 3),
        "daemon_fraction_of_pair": spread([a["wall"] / b["wall"] / c["factor"]
                                           for a, b, c in zip(lim, d, pair, strict=True)], 3),
        # Round by round: the target (daemon >= 0.95 of the limit) is out of
        # any daemon's reach in a round whose two bare runs at once fall
        # below it (bench/README.md, session 21).
        "rounds_of_limit": [{"daemon": round(a["wall"] / b["wall"], 3),
                             "pair": round(c["factor"], 3)}
                            for a, b, c in zip(lim, d, pair, strict=True)],
        **({"daemon_vs_strun": spread([a["wall"] / b["wall"] for a, b in zip(s, d, strict=True)])}
           if s else {}),
        "daemon_cpu_vs_limit_cpu": spread([b["cpu"] / a["cpu"] for a, b in zip(lim, d, strict=True)], 3),
        # The most the daemon's CPU lets it reach: with every core busy it
        # takes at least its CPU / cores of wall time, however well it
        # schedules. Below the target, the daemon's own work (the door's
        # checks, the broker, sealing, the commit: its CPU beyond the bare
        # runs') is what is left to cut; near the ceiling, no scheduling wins it.
        "daemon_cpu_ceiling": spread([cores * a["wall"] / b["cpu"]
                                      for a, b in zip(lim, d, strict=True)], 3),
        "daemon_cores_busy": spread([b["cpu"] / (cores * b["wall"])
                                                  for b in d], 3),
        **({"before_fraction_of_limit": spread([a["wall"] / b["wall"] for a, b in
                                                zip(lim, log["before"], strict=True)], 3),
            "daemon_vs_before": spread([b["wall"] / a["wall"] for a, b in
                                        zip(d, log["before"], strict=True)], 3),
            "before_fixed_cost_seconds": spread([x for r in log["before"] for x in r["fixed"]], 3),
            } if args.before else {}),
        "limit_run_seconds": spread([x for r in lim for x in r["run_seconds"]]),
        "pair_alone_seconds": spread([x for r in pair for x in r["alone_seconds"]]),
        "pair_together_seconds": spread([x for r in pair for x in r["together_seconds"]]),
        "pair_together_cpu_vs_alone": spread([r["together_cpu_vs_alone"] for r in pair], 3),
        # The workers' own account of the batch's tasks (sealing included)
        # against the limit's runs of the same files: what a run costs in a
        # worker beside the other, and how much of it is the kernel's.
        "daemon_worker_cpu_vs_limit_cpu": spread([sum(b["worker_cpu"]) / a["cpu"] for a, b in
                                                  zip(lim, d, strict=True)], 3),
        "daemon_worker_system_share": spread([r["worker_cpu"][1] / sum(r["worker_cpu"])
                                              for r in d], 3),
        "limit_system_share": spread([r["system"] / r["cpu"] for r in lim], 3),
        "daemon_pipeline_seconds": spread([x for r in d for x in r["pipeline"]]),
        # The same runs one at a time on the idle daemon (the fixed-cost files):
        # against limit_run_seconds, what the daemon's surroundings cost a run;
        # against daemon_pipeline_seconds, what two runs at once cost each other.
        "daemon_alone_pipeline_seconds": spread([x for r in d for x in r.get("alone", [])]),
        "fixed_cost_seconds": spread(fixed, 3),
        # Previews of the fixed-cost files still to draw when a batch was due:
        # drawn before its window (session 28), each round.
        "daemon_previews_pending_at_batch": [r.get("previews_pending") for r in d],
        "worker_peak_rss_mib": round(worker_peak / 2**20),
        "direct_peak_rss_mib": round(direct_peak / 2**20),
        "worker_vs_direct_peak_rss": round(worker_peak / direct_peak, 3),
        "products_compared": compared, "products_differing": differing,
        **({"multicore": multicore} if multicore else {}),
    }
    print(json.dumps(figures, indent=1))
    f = figures
    print(f"\ndaemon at {f['daemon_fraction_of_limit']['median']:.0%} of the limit "
          f"({f['daemon_fraction_of_limit']['min']:.0%}-{f['daemon_fraction_of_limit']['max']:.0%};"
          f" target >= 95%; two bare runs at once {f['pair_fraction_of_limit']['median']:.0%}, the daemon "
          f"{f['daemon_fraction_of_pair']['median']:.0%} of them; the pair reached 95% in "
          f"{sum(r['pair'] >= 0.95 for r in f['rounds_of_limit'])} of {len(f['rounds_of_limit'])} rounds; "
          f"its own CPU allows at most {f['daemon_cpu_ceiling']['median']:.0%}), "
          f"{f.get('daemon_vs_strun', {}).get('median', '-')}x strun; fixed cost "
          f"{f['fixed_cost_seconds']['median']} s median (target <= 0.2 s); worker peak memory "
          f"{f['worker_vs_direct_peak_rss']}x the direct run (target <= 1.1x); "
          f"{compared - len(differing)}/{compared} products bit-identical")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0 if not differing and not (multicore and multicore["products_differing"]) else 1


if __name__ == "__main__":
    sys.exit(main())
