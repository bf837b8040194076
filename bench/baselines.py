"""The baselines bench_detector1.py sets the daemon against: strun, the
machine's limit (one warm run alone per core), the pair (one warm process per
core, all running at once) and one exposure on several cores.

The limit is issue 15's yardstick: N x (median run alone) / cores. It assumes
two runs at once each go as fast as one alone. On a machine whose cores share
a last-level cache they do not: a run whose arrays fit the cache alone spills
it when another runs beside it. The pair measures what the machine really
gives two runs at once with nothing else in the way (no broker, no watcher,
no hand-over), so the daemon's own cost is daemon / pair, and the machine's
is pair / limit.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from measuring import children_cpu, identical, spread

# A warm process, as a worker is: jwst imported, gc.freeze(), schemas
# memoised, one file run untimed, what survives frozen after each run. With
# "--serve" it says "ready" after the warm-up, then runs each file named on
# a line of stdin and answers with its wall and CPU time, so that the parent
# can run files alone or several processes' files at once.
_WARM_RUNS = """
import json, os, resource, sys, time
from calstream.steps.worker_warmup import freeze_survivors, warm_up
warm_up()
from jwst.pipeline import Detector1Pipeline
serve = sys.argv[1] == "--serve"
out, warmup, files = sys.argv[1 + serve], sys.argv[2 + serve], sys.argv[3 + serve:]
Detector1Pipeline.call(warmup, output_dir=out, save_results=True)  # not timed
freeze_survivors()
def run(f):
    w, c, k = time.perf_counter(), time.process_time(), os.times().system
    Detector1Pipeline.call(f, output_dir=out, save_results=True)
    figures = (time.perf_counter() - w, time.process_time() - c, os.times().system - k)
    freeze_survivors()  # not timed: a worker does it after sending its answer
    return figures
if serve:
    print("ready", flush=True)
    files = iter(sys.stdin.readline, "")
runs = []
for f in files:
    runs.append(run(f.strip()))
    if serve:
        print(json.dumps(runs[-1]), flush=True)
print(json.dumps({"runs": runs, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

# One exposure, one warm process, jwst's maximum_cores 1 and 2 in turn (ABAB):
# what lending an idle core to a lone exposure gains (deciders/core_sharing.py).
# CPU includes stcal's pool processes (joined children).
_MULTICORE = """
import json, resource, sys, time
from calstream.steps.worker_warmup import warm_up
def cpu():
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
if __name__ == "__main__":
    warm_up()
    from jwst.pipeline import Detector1Pipeline
    out, f, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    Detector1Pipeline.call(f, output_dir=out, save_results=True)  # not timed
    runs = {"1": [], "2": []}
    for _ in range(repeats):
        for cores in ("1", "2"):
            steps = {s: {"maximum_cores": cores} for s in ("jump", "ramp_fit")}
            w, c = time.perf_counter(), cpu()
            Detector1Pipeline.call(f, output_dir=f"{out}/{cores}", save_results=True, steps=steps)
            runs[cores].append((time.perf_counter() - w, cpu() - c))
    print(json.dumps(runs))
"""


def _fresh(out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


def run_strun(files: list[Path], out: Path) -> dict:
    """``strun calwebb_detector1 FILE`` per file, one after another."""
    strun = Path(sys.executable).with_name("strun")
    _fresh(out)
    cpu, start = children_cpu(), time.monotonic()
    for f in files:
        subprocess.run([str(strun), "calwebb_detector1", str(f), "--output_dir", str(out)],
                       check=True, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"wall": time.monotonic() - start, "cpu": children_cpu() - cpu}


def run_limit(files: list[Path], warmup: Path, out: Path, cores: int) -> dict:
    """Each file alone in one warm process; wall = N x median run / cores."""
    _fresh(out)
    done = subprocess.run([sys.executable, "-c", _WARM_RUNS, str(out), str(warmup), *map(str, files)],
                          check=True, cwd=out, capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    walls = [w for w, *_ in figures["runs"]]
    return {"wall": statistics.median(walls) * len(files) / cores,
            "cpu": sum(c for _, c, _ in figures["runs"]), "run_seconds": walls,
            "system": sum(k for *_, k in figures["runs"]),
            "peak_rss": figures["peak_rss"]}


def run_pair(files: list[Path], warmup: Path, out: Path, cores: int) -> dict:
    """What ``cores`` runs at once cost each other: one warm process per core;
    each step of the probe runs one file in every process alone, one after
    another, then one file in every process at once. Alone and together are
    minutes apart at most, so a change in the machine's speed (20-40 % here
    between runs minutes apart) falls on both. ``factor`` = mean run alone /
    longest run together: the share of the limit that ``cores`` bare runs at
    once reach. ``wall`` is the limit's wall divided by it."""
    procs = []
    for i in range(cores):
        where = _fresh(out / str(i))
        with open(where / "stderr.log", "w") as log:  # jwst's log: kept, not piped
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _WARM_RUNS, "--serve", str(where), str(warmup)],
                cwd=where, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True))

    def answer(p: subprocess.Popen) -> list[float]:
        line = p.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"a pair process ended early (log: {out})")
        return json.loads(line)

    def run(batch: list[tuple[subprocess.Popen, Path]]) -> list[list[float]]:
        for p, f in batch:
            p.stdin.write(f"{f}\n")
            p.stdin.flush()
        return [answer(p) for p, _ in batch]

    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a pair process failed in its warm-up (log: {out})")
        alone, together, factors = [], [], []
        for k in range(0, len(files) - cores + 1, cores):
            batch = list(zip(procs, files[k:k + cores], strict=True))
            one = [r for b in batch for r in run([b])]
            both = run(batch)
            alone += one
            together += both
            factors.append(statistics.mean(w for w, *_ in one) / max(w for w, *_ in both))
        for p in procs:
            p.stdin.close()
            p.wait(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    factor = statistics.median(factors)
    return {"wall": statistics.median([w for w, *_ in alone]) * len(files) / cores / factor,
            "cpu": sum(c for _, c, _ in together) * len(files) / len(together),
            "factor": factor, "factors": factors,
            "alone_seconds": [w for w, *_ in alone], "together_seconds": [w for w, *_ in together],
            "together_cpu_vs_alone": sum(c for _, c, _ in together) / sum(c for _, c, _ in alone)}


def run_multicore(file: Path, out: Path, repeats: int) -> dict:
    """One exposure with maximum_cores 1 and 2 in turn: speed-up, CPU, bytes."""
    _fresh(out)
    for d in ("1", "2"):
        (out / d).mkdir(parents=True)
    script = out / "multicore.py"  # a file: spawned children re-import __main__
    script.write_text(_MULTICORE)
    done = subprocess.run([sys.executable, str(script), str(out), str(file), str(repeats)],
                          check=True, cwd=out, capture_output=True, text=True)
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    one = {p.name: [str(p)] for p in (out / "1").glob("*.fits")}
    compared, differing = identical(one, out / "2")
    return {"wall_1core": spread([w for w, _ in runs["1"]]),
            "wall_2cores": spread([w for w, _ in runs["2"]]),
            "cpu_1core": spread([c for _, c in runs["1"]]),
            "cpu_2cores": spread([c for _, c in runs["2"]]),
            "speedup": spread([a[0] / b[0] for a, b in zip(runs["1"], runs["2"], strict=True)]),
            "products_compared": compared, "products_differing": differing}
