"""What two warm runs at once cost each other, one thing varied at a time.

Issue 15's limit assumes that two bare runs at once each go as fast as one
alone; at full frame the daemon's workers spent 3-8 % more CPU on their
runs than that (bench/README.md, sessions 28-30). This bench takes one
possible cause at a time and measures it on two bare warm processes (one per
core, ``baselines.py``'s warm runs: jwst imported, ``gc.freeze``), each
running the kit's files back to back, the two ways of the condition taking
turns (ABBA, ``--rounds`` times):

* ``offset``: both processes start together, or the second half a run
  later (a daemon's workers are never in step);
* ``sealing``: after each run the process hashes (sha256) and syncs its
  outputs, as a worker seals them, or does not (the other process's run
  is what is measured);
* ``daemon``: an idle calstream daemon (every role, its embedded broker, no
  work) runs beside them, or is stopped (SIGSTOP) for the turn.

Each run's own CPU time (the pipeline's, as the process measures it) and
wall time; in the offset way the runs that did not overlap the other
process for their whole length (the first of the late one, the last of the
early one) are left out. Medians per way, and B/A.

    .venv/bin/python bench/pair_conditions.py --condition offset --full
    .venv/bin/python bench/pair_conditions.py --condition daemon --full --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from baselines import _WARM_RUNS

# The warm runs, sealing their outputs after each run when the flag file says so
# (not timed: the other process's run is what is measured).
_SEALING_RUNS = _WARM_RUNS.replace("    freeze_survivors()  # not timed", """\
    if open(os.environ["PAIR_SEAL_FLAG"]).read().strip() == "seal":
        import glob, hashlib
        for p in glob.glob(out + "/*.fits"):
            with open(p, "rb") as fh:
                hashlib.file_digest(fh, "sha256")
                os.fsync(fh.fileno())
    freeze_survivors()  # not timed""")
WAYS = {"offset": ("together", "offset"), "sealing": ("plain", "seal"),
        "daemon": ("stopped", "running")}


class Pair:
    def __init__(self, tmp: Path, files: list[Path], env: dict):
        assert _SEALING_RUNS != _WARM_RUNS, "baselines._WARM_RUNS changed: update the hook"
        self.flag = tmp / "seal-flag"
        self.flag.write_text("plain")
        self.files = files
        self.procs = []
        for i in range(2):
            where = tmp / f"p{i}"
            where.mkdir()
            self.procs.append(subprocess.Popen(
                [sys.executable, "-c", _SEALING_RUNS, "--serve", str(where), str(files[0])],
                cwd=where, env={**env, "PAIR_SEAL_FLAG": str(self.flag)}, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=open(where / "stderr.log", "w")))
        for p in self.procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a warm process failed in its warm-up (logs: {tmp})")

    def runs(self, count: int, delay: float) -> list[list[list[float]]]:
        """Each process's ``count`` runs back to back, the second ``delay`` s later."""
        out: list[list[list[float]]] = [[], []]

        def go(i: int) -> None:
            time.sleep(delay if i else 0.0)
            p = self.procs[i]
            for k in range(count):
                p.stdin.write(f"{self.files[1 + k % (len(self.files) - 1)]}\n")
                p.stdin.flush()
            out[i] = [json.loads(p.stdout.readline()) for _ in range(count)]
        threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def close(self) -> None:
        for p in self.procs:
            p.kill()


def _idle_daemon(tmp: Path, env: dict) -> tuple[subprocess.Popen, list[int]]:
    daemon = subprocess.Popen(
        [sys.executable, "-m", "calstream.daemon.operations.cli", "run", "--work-dir",
         str(tmp / "daemon"), "--metrics-address", "127.0.0.1:0"], env=env,
        stdout=subprocess.DEVNULL, stderr=open(tmp / "daemon.log", "w"))
    time.sleep(40)  # started, its workers warm, idle
    children = subprocess.run(["pgrep", "-P", str(daemon.pid)], capture_output=True,
                              text=True).stdout.split()
    return daemon, [daemon.pid, *map(int, children)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--condition", choices=sorted(WAYS), required=True)
    ap.add_argument("--full", action="store_true", help="2048x2048 (FULL), 10 groups")
    ap.add_argument("--rounds", type=int, default=2, help="ABBA rounds")
    ap.add_argument("--runs", type=int, default=4, help="files each process runs a turn")
    args = ap.parse_args()
    from calstream.steps.synthetic.kit import build_kit
    from calstream.steps.synthetic.program import ProgramSpec

    tmp = Path(tempfile.mkdtemp(prefix="calstream-pair-conditions-"))
    daemon, pids = None, []
    try:
        size = {"subarray": "FULL", "ngroups": 10} if args.full else {}
        kit = build_kit(tmp / "kit", ProgramSpec(dithers=3, **size), seed=11)
        env = {**os.environ, **kit.crds_env}
        pair = Pair(tmp, kit.uncal_files, env)
        a, b = WAYS[args.condition]
        if args.condition == "daemon":
            daemon, pids = _idle_daemon(tmp, env)
        half = pair.runs(1, 0.0)[0][0][0] / 2  # half a run's wall time
        figures: dict[str, list[list[float]]] = {a: [], b: []}
        for r in range(args.rounds):
            for way in (a, b, b, a):
                pair.flag.write_text("seal" if way == "seal" else "plain")
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP if way == "stopped" else signal.SIGCONT)
                first, second = pair.runs(args.runs, half if way == "offset" else 0.0)
                if way == "offset":
                    first, second = first[:-1], second[1:]
                figures[way] += first + second
                print(f"round {r + 1}: {way:8s} cpu " + " ".join(
                    f"{c:.2f}" for _, c, _ in first + second), flush=True)
        pair.close()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    cpu = {w: statistics.median(c for _, c, _ in rs) for w, rs in figures.items()}
    wall = {w: statistics.median(x for x, _, _ in rs) for w, rs in figures.items()}
    print(json.dumps({"condition": args.condition, "full": args.full, "rounds": args.rounds,
                      "runs_per_way": {w: len(rs) for w, rs in figures.items()},
                      "cpu_s_median": {w: round(c, 3) for w, c in cpu.items()},
                      "wall_s_median": {w: round(x, 3) for w, x in wall.items()},
                      f"{b}/{a} cpu": round(cpu[b] / cpu[a], 4),
                      f"{b}/{a} wall": round(wall[b] / wall[a], 4)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
