"""What a worker adds around a detector1 run, measured in one warm process.

bench_detector1.py finds the daemon's workers spending a little more CPU per
exposure than the limit's bare runs (1.7 % at SUB160 in session 25). This
bench asks whether that is the worker's own wrapping. One warm process (as
a worker: jwst warmed, survivors frozen after each run, the worker's
logging) runs the same synthetic exposures two ways, taking turns (ABAB,
the order swapped every exposure), and reports the median CPU of each:

* **bare**: ``Detector1Pipeline.call(file, output_dir=..., save_results=True)``,
  as the limit runs it;
* **worker**: what a worker process does for a task (doers/worker_process.py):
  the run's own log file, the task environment, the outputs sealed (fsync
  and digest, output_sealing.py) around ``steps.detector1.run_detector1``.

What it leaves out is what happens between processes: the hand-over on
the pipe and two runs sharing the machine's caches (bench_detector1's pair).

    .venv/bin/python bench/worker_path.py [--exposures 12] [--rounds 2] [--full]
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
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--exposures", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="2048x2048 (FULL), 10 groups")
    args = ap.parse_args()

    from calstream.steps.synthetic.kit import build_kit
    from calstream.steps.synthetic.program import ProgramSpec

    tmp = Path(tempfile.mkdtemp(prefix="calstream-worker-path-"))
    try:
        size = {"subarray": "FULL", "ngroups": 10} if args.full else {}
        kit = build_kit(tmp / "kit", ProgramSpec(dithers=args.exposures + 1, **size), seed=11)
        os.environ.update(kit.crds_env)
        cpu = measure(kit.uncal_files, tmp / "out", args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bare, worker = (statistics.median(cpu[k]) for k in ("bare", "worker"))
    print(json.dumps({"exposures": args.exposures, "rounds": args.rounds,
                      "cpu_ms_median": {"bare": round(bare * 1e3, 1),
                                        "worker": round(worker * 1e3, 1)},
                      "worker_over_bare": round(worker / bare, 3)}, indent=1))
    return 0


# The measuring process, run as a script as baselines.py runs the limit's
# (calstream's own modules import jwst only in steps/). argv: out, files...
_MEASURE = """
import json, sys, time
from pathlib import Path
from calstream.daemon.doers import worker_process
from calstream.daemon.doers.output_sealing import sealing
from calstream.steps.detector1 import run_detector1
from calstream.steps.environment import environ
from calstream.steps.worker_warmup import freeze_survivors, warm_up
worker_process._worker_logging()
warm_up()
from jwst.pipeline import Detector1Pipeline
out, rounds, files = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]

def bare(f, tag):
    Detector1Pipeline.call(f, output_dir=str(out / f"bare{tag}"), save_results=True)

def worker(f, tag):
    where = out / f"worker{tag}"
    with worker_process._task_log(str(out / "logs" / f"{tag}.log")), environ({}), \\
            sealing(str(where)) as seal:
        seal(run_detector1(f, str(where)))

ways = {"bare": bare, "worker": worker}
for name, way in ways.items():  # each way's first run, not timed, as a warm worker's
    way(files[0], f"warm-{name}")
freeze_survivors()
cpu = {name: [] for name in ways}
for r in range(rounds):
    for i, f in enumerate(files[1:]):
        for name in (list(ways) if (i + r) % 2 == 0 else list(ways)[::-1]):
            started = time.process_time()  # every thread's: sealing hashes in threads
            ways[name](f, f"{r}-{i}")
            cpu[name].append(time.process_time() - started)
            freeze_survivors()
print(json.dumps(cpu))
"""


def measure(files: list[Path], out: Path, rounds: int) -> dict[str, list[float]]:
    """CPU seconds of each run, by way, from one warm process."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(out), str(rounds),
                           *map(str, files)], capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        done.check_returncode()
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
