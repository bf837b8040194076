"""Where the fixed cost per exposure goes (issue 15): the bench's daemon round
(bench_detector1.daemon_round: warm-up, then one file at a time on an idle
daemon) with timing probes wrapped around the daemon's own steps, printed as
the median milliseconds of each segment of an exposure's path:

detected (watcher's first sight) -> seen (its first look: a stat, the
ledger) -> layout (structure read) -> identity (header read) -> digest
(whole-file hash) -> digested -> announce (whole and identified) ->
raw_acked (arrival on the broker, ledger written) -> consumed (the stage's
consumer has it) -> judged (admitted) -> run -> dispatch (a worker is the
item's) -> result (minus the pipeline's own time: the worker's overhead,
sealing included) -> publish -> store -> stored (renames, record) ->
product_acked.

    python bench/fixed_cost_profile.py REPO_DIR N_FILES SCRATCH_DIR [--full]

REPO_DIR holds bench/ (run it with the venv of the code to profile: two
checkouts run at the same time give a side-by-side before/after). ``--full``:
2048x2048 with 10 groups (the default is the bench's SUB160, 5 groups).

Also printed: the daemon's main process's CPU seconds per exposure (all its
threads, from the watcher's first sight to the product event's ack; one file
at a time, so nothing else runs in it meanwhile), and the machine's floor
under the I/O the fixed cost holds: a full-frame run's two 96 MB outputs
written and synced alone (the disk's fsync bandwidth), and sha256 of 96 MB
(an output) and of 84 MB (an input) from the page cache.
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

from calstream.daemon.doers import (  # noqa: E402
    file_reads,
    product_store,
    record_admitter,
    work_item_runner,
    worker_pool,
)
from calstream.daemon.doers.inbox import announcer  # noqa: E402
from calstream.daemon.doers.kafka import publisher  # noqa: E402

MARKS: dict[str, dict[str, float]] = {}
KEYS = ["detected", "seen", "layout", "identity", "digest", "digested", "announce", "raw_acked", "consumed", "judged", "run", "dispatch", "result",
        "publish", "store", "stored", "product_acked"]


def mark(eid, what):
    MARKS.setdefault(eid, {})[what] = time.time()
    if what == "product_acked":
        MARKS[eid]["cpu_end"] = time.process_time()


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
    MARKS[a.exposure_id].setdefault("cpu_start", time.process_time())
    return a.exposure_id


def pipeline_time(self, item, wid, scratch, result, *a):
    MARKS.setdefault(item.name, {})["pipeline"] = result["duration_seconds"]
    return item.name


def stem(path):
    return Path(path).name.split("_uncal")[0]


probe(file_reads.FileReads, "layout", lambda self, path: stem(path), "seen", "layout")
probe(file_reads.FileReads, "identity", lambda self, path: stem(path), None, "identity")
probe(file_reads.FileReads, "digest", lambda self, path: stem(path), "digest", "digested")
probe(announcer.Announcer, "announce", detected, "announce", "raw_acked")
probe(record_admitter.RecordAdmitter, "_judge", lambda self, m, r: m.get("exposure_id"),
      "consumed", "judged")
probe(work_item_runner.WorkItemRunner, "run", lambda self, item: item.name, "run")
probe(worker_pool.WorkerPool, "_exchange",
      lambda self, request, t: stem(request.message[1].get("input_path", "x")), "dispatch",
      "result")
probe(work_item_runner.WorkItemRunner, "_publish", pipeline_time, "publish")
probe(product_store.ProductStore, "publish", lambda self, scratch, *a, name=None, **k: name,
      "store", "stored")
probe(publisher.Publisher, "publish",
      lambda self, t, k, m: m.get("exposure_id") if t == "products" else None, None,
      "product_acked")


def disk_floor(tmp: Path) -> None:
    """What the disk and the hash allow, measured beside the daemon's round."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from calstream.steps.fitsfile import file_digest

    block, paths = os.urandom(1 << 20), [tmp / "floor-a.bin", tmp / "floor-b.bin"]
    input_bytes = block * 84
    times: dict[str, list[float]] = {}
    for _ in range(3):
        start = time.perf_counter()
        for p in paths:
            with open(p, "wb") as f:
                for _ in range(96):
                    f.write(block)
        written = time.perf_counter()
        with ThreadPoolExecutor(2) as threads:
            list(threads.map(lambda p: os.fsync(fd := os.open(p, os.O_RDONLY)) or os.close(fd),
                             paths))
        synced = time.perf_counter()
        file_digest(paths[0])
        hashed = time.perf_counter()
        hashlib.sha256(input_bytes).digest()
        times.setdefault("write 2 x 96 MB (page cache)", []).append(written - start)
        times.setdefault("fsync 2 x 96 MB at once", []).append(synced - written)
        times.setdefault("sha256 of a 96 MB file (cached)", []).append(hashed - synced)
        times.setdefault("sha256 of 84 MB in memory", []).append(time.perf_counter() - hashed)
        for p in paths:
            p.unlink()
    print("floor (median of 3, ms):")
    for name, values in times.items():
        print(f"  {name:34s} {statistics.median(values) * 1000:7.1f}")


def main():
    from calstream.steps.synthetic.kit import build_kit
    from calstream.steps.synthetic.program import ProgramSpec

    n, tmp = int(sys.argv[2]), Path(sys.argv[3])
    size = {"subarray": "FULL", "ngroups": 10} if "--full" in sys.argv[4:] else {}
    kit = build_kit(tmp / "kit", ProgramSpec(dithers=n + 1, **size), seed=11)
    os.environ.update(kit.crds_env)
    files = kit.uncal_files
    result = bench.daemon_round(tmp / "daemon", files[:1], files, 2)
    print("fixed cost (s):", [round(x, 3) for x in result["fixed"]],
          "median", round(statistics.median(result["fixed"]), 3))
    segments: dict[str, list[float]] = {}
    cpu = [t["cpu_end"] - t["cpu_start"] for t in MARKS.values() if "cpu_end" in t and "cpu_start" in t]
    if cpu:
        print("main process CPU ms per exposure:", [round(c * 1000) for c in cpu])
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
    disk_floor(tmp)


if __name__ == "__main__":  # spawned workers import this module again
    main()
