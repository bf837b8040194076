"""What starting calibration workers costs: a pool of 2 warm workers, then one replaced.

    .venv/bin/python bench/worker_start.py [--rounds 4] [--before PYTHONPATH]
    .venv/bin/python bench/worker_start.py --threads

Each measure runs in a fresh interpreter (the pool's first start includes
whatever the process starts once: the worker server). With ``--before``,
the code found on that path (a directory holding a ``calstream`` package:
its ``__init__.py`` and links to a checkout's ``daemon``, ``steps``,
``topics``) takes turns with this checkout's, ABAB, so a change of load
hits both alike. Reported, median and spread over rounds, wall beside CPU
(user + system of the whole process tree: the daemon's process, the
server, the workers):

* ``start``: from ``WorkerPool.start()`` until both workers have answered
  a first task (each was warm: jwst imported, ``warm_up`` done);
* ``replace``: a worker retired after its task (``max_tasks_per_worker``
  1) and its replacement's start, until the replacement answers a task.

``--threads``: the threads of a process that imports jwst and warms up
(/proc/self/task, by name), of the worker server after it forked, and of a
forked worker before and after a BLAS call (docs/design.md, "Worker
processes").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measuring import round_in_process, tree_cpu  # noqa: E402

_WARM = "calstream.steps.worker_warmup:warm_up"


def _threads(pid: int | str = "self") -> list[str]:
    names = []
    for t in sorted(os.listdir(f"/proc/{pid}/task")):
        with open(f"/proc/{pid}/task/{t}/comm") as f:
            names.append(f.read().strip())
    return names


def blas_threads() -> dict:
    """In a worker: its threads before and after a BLAS call."""
    import numpy as np

    before = _threads()
    a = np.ones((600, 600))
    (a @ a).sum()
    return {"pid": os.getpid(), "before_blas": before, "after_blas": _threads()}


def _measure() -> dict:
    """One round, in this (fresh) interpreter."""
    import anyio

    from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
    from calstream.daemon.operations.metrics import Metrics

    def cpu() -> float:
        return tree_cpu(os.getpid())

    def proc_cpu(pid: int) -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    pool = WorkerPool(2, stage="bench", metrics=Metrics(), initializer=_WARM)
    result = {}

    async def both() -> list[int]:
        pids = []

        async def one():
            pids.append((await pool.run("os:getpid", {}, timeout=600)).value)
        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
        return pids

    async def main():
        cpu0, wall0 = cpu(), time.monotonic()
        pool.start()
        first = await both()
        result["start"] = {"wall": time.monotonic() - wall0, "cpu": cpu() - cpu0}
        # One worker dies (abort): the pool replaces it at once. Timed until
        # a task on it has answered; the dead worker's CPU is not the replacement's.
        before = {pid: proc_cpu(pid) for pid in first}
        cpu0, wall0 = cpu(), time.monotonic()
        with contextlib.suppress(WorkerLost):
            await pool.run("os:abort", {}, timeout=600)
        pids = await both()  # one on the idle worker, one on the replacement
        dead = [pid for pid in first if pid not in pids]
        result["replace"] = {"wall": time.monotonic() - wall0,
                             "cpu": cpu() - cpu0 + sum(before[pid] for pid in dead)}
        result["pids"] = first + pids

    try:
        anyio.run(main)
    finally:
        pool.close()
    return result


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _thread_report() -> dict:
    import anyio

    from calstream.daemon.doers.worker_pool import WorkerPool
    from calstream.daemon.operations.metrics import Metrics

    probe = subprocess.run([sys.executable, "-c", (
        "import os, json\n"
        "n = lambda: [open(f'/proc/self/task/{t}/comm').read().strip()"
        " for t in sorted(os.listdir('/proc/self/task'))]\n"
        "import jwst.pipeline\nafter_import = n()\n"
        "from calstream.steps.worker_warmup import warm_up\nwarm_up()\n"
        "print(json.dumps({'after_jwst_import': after_import, 'after_warm_up': n()}))")],
        capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    pool = WorkerPool(1, stage="bench", metrics=Metrics(), initializer=_WARM)
    pool.start()
    try:
        report["worker"] = anyio.run(lambda: pool.run(
            "__main__:blas_threads", {}, timeout=600)).value
        server = int(open(f"/proc/{report['worker']['pid']}/stat").read().rsplit(")", 1)[1]
                     .split()[1])
        report["worker_parent"] = {"pid": server, "is_daemon": server == os.getpid(),
                                   "threads": _threads(server)}
    finally:
        pool.close()
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--before", type=Path, metavar="PYTHONPATH")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", action="store_true")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_measure()))
        return 0
    if args.threads:
        print(json.dumps(_thread_report(), indent=1))
        return 0
    runs: dict[str, list[dict]] = {"after": [], **({"before": []} if args.before else {})}
    for r in range(args.rounds):
        order = ["after", "before"] if args.before else ["after"]
        for name in order if r % 2 == 0 else order[::-1]:
            runs[name].append(round_in_process(__file__, ["--one"], args.before if name ==
                                               "before" else None, timeout=900))
            print(name, r, json.dumps(runs[name][-1]), file=sys.stderr)
    summary = {name: {what: {k: _spread([x[what][k] for x in xs]) for k in ("wall", "cpu")}
                      for what in ("start", "replace")} for name, xs in runs.items()}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
