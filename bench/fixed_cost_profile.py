"""Where the fixed cost per exposure goes (issue 15): the bench's daemon round
(bench_detector1.daemon_round: warm-up, then one file at a time on an idle
daemon) with timing probes wrapped around the daemon's own steps, printed as
the median milliseconds of each segment of an exposure's path:

detected (watcher's first sight) -> announce (whole and identified) ->
raw_acked (arrival on the broker, ledger written) -> consumed (the stage's
consumer has it) -> judged (admitted) -> run -> dispatch (a worker is the
item's) -> result (minus the pipeline's own time: the worker's overhead,
sealing included) -> publish -> store -> stored (renames, record) ->
product_acked.

    python bench/fixed_cost_profile.py REPO_DIR N_FILES SCRATCH_DIR

REPO_DIR holds bench/ (run it with the venv of the code to profile: two
checkouts run at the same time give a side-by-side before/after).
"""
import asyncio
import functools
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(sys.argv[1]) / "bench"))
import bench_detector1 as bench  # noqa: E402

from calstream.daemon.doers import product_store, record_admitter, work_item_runner, worker_pool  # noqa: E402
from calstream.daemon.doers.inbox import announcer  # noqa: E402
from calstream.daemon.doers.kafka import publisher  # noqa: E402

MARKS: dict[str, dict[str, float]] = {}
KEYS = ["detected", "announce", "raw_acked", "consumed", "judged", "run", "dispatch", "result",
        "publish", "store", "stored", "product_acked"]


def mark(eid, what):
    MARKS.setdefault(eid, {})[what] = time.time()


def probe(cls, name, key, before, after=None):
    """Wrap cls.name (sync or async): mark ``before`` and ``after`` for key(args)."""
    orig = getattr(cls, name)
    if asyncio.iscoroutinefunction(orig):
        @functools.wraps(orig)
        async def wrapped(*a, **kw):
            eid = key(*a, **kw)
            if eid and before:
                mark(eid, before)
            try:
                return await orig(*a, **kw)
            finally:
                if eid and after:
                    mark(eid, after)
    else:
        @functools.wraps(orig)
        def wrapped(*a, **kw):
            eid = key(*a, **kw)
            if eid and before:
                mark(eid, before)
            try:
                return orig(*a, **kw)
            finally:
                if eid and after:
                    mark(eid, after)
    setattr(cls, name, wrapped)


def detected(self, a, sig):
    MARKS.setdefault(a.exposure_id, {})["detected"] = a.detected_at
    return a.exposure_id


def pipeline_time(self, item, wid, scratch, result, *a):
    MARKS.setdefault(item.name, {})["pipeline"] = result["duration_seconds"]
    return item.name


def stem(path):
    return Path(path).name.split("_uncal")[0]


probe(announcer.Announcer, "announce", detected, "announce", "raw_acked")
probe(record_admitter.RecordAdmitter, "_judge", lambda self, m, r: m.get("exposure_id"),
      "consumed", "judged")
probe(work_item_runner.WorkItemRunner, "run", lambda self, item: item.name, "run")
probe(worker_pool.WorkerPool, "_exchange",
      lambda self, w, req, t: stem(req[1].get("input_path", "x")), "dispatch", "result")
probe(work_item_runner.WorkItemRunner, "_publish", pipeline_time, "publish")
probe(product_store.ProductStore, "publish", lambda self, scratch, *a, name=None, **k: name,
      "store", "stored")
probe(publisher.Publisher, "publish",
      lambda self, t, k, m: m.get("exposure_id") if t == "products" else None, None,
      "product_acked")


def main():
    from calstream.steps.synthetic.kit import build_kit
    from calstream.steps.synthetic.program import ProgramSpec

    n, tmp = int(sys.argv[2]), Path(sys.argv[3])
    kit = build_kit(tmp / "kit", ProgramSpec(dithers=n + 1), seed=11)
    os.environ.update(kit.crds_env)
    files = kit.uncal_files
    result = bench.daemon_round(tmp / "daemon", files[:1], files, 2)
    print("fixed cost (s):", [round(x, 3) for x in result["fixed"]],
          "median", round(statistics.median(result["fixed"]), 3))
    segments: dict[str, list[float]] = {}
    for t in MARKS.values():
        if "product_acked" not in t or "pipeline" not in t or "detected" not in t:
            continue
        for a, b in zip(KEYS, KEYS[1:], strict=False):
            if a in t and b in t:
                # dispatch->result: the worker's overhead, not the pipeline's time
                pipeline = t["pipeline"] if b == "result" else 0.0
                segments.setdefault(f"{a}->{b}", []).append((t[b] - t[a] - pipeline) * 1000)
    print(f"median ms by segment, first (warm-up) file included; load {os.getloadavg()[0]:.1f}")
    for name, values in segments.items():
        print(f"  {name:26s} {statistics.median(values):7.1f}  ({min(values):.0f}-{max(values):.0f})")


if __name__ == "__main__":  # spawned workers import this module again
    main()
