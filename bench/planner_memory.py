"""The planner's memory over a long run, with and without a memory budget.

A planner that decides fresh product events keeps each as the event it was
parsed into; one restored from a snapshot keeps its records compactly until
read. With a budget (``planner_memory_mb``), a planner over it just after a
snapshot starts again from that snapshot (deciders/planner_memory.py). This
bench feeds N fresh events (bench_planner's synthetic programs, the whole
record path) to one planner per setup, a snapshot every ``--every`` events
as the daemon takes them (and at once when over the budget: its memory is
looked at every 1,000 events here, every second in the daemon), and reports
the memory in use (doers/process_memory.py) at each snapshot ("before->after" where it
compacted), the peak, the compactions and the CPU seconds. Each setup runs in a process of its own (memory is per process),
interleaved (A B A B) over ``--rounds``:

    .venv/bin/python bench/planner_memory.py --events 300000 --budget-mb 1024 --rounds 2
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_planner as b  # noqa: E402

from calstream.daemon.deciders import planner_memory, planner_snapshot  # noqa: E402
from calstream.daemon.deciders.snapshot_columns import collector_paused  # noqa: E402
from calstream.daemon.deciders.snapshot_reuse import BlockCache  # noqa: E402
from calstream.daemon.doers import planner_compaction, planner_snapshots  # noqa: E402
from calstream.daemon.doers.process_memory import resident_in_use_bytes  # noqa: E402

MiB = 2**20


def _records(total: int):
    program = 1
    while total > 0:
        for raw in b.program_records(program, min(1000, total // 2 or 1)):
            yield raw
            total -= 1
            if total <= 0:
                return
        program += 1


def one_run(events: int, every: int, budget_mb: int, where: str) -> dict:
    """One planner deciding ``events`` fresh events; budget 0: none."""
    budget = budget_mb * MiB or None
    path, reuse, since_start, last, compactions = b.RecordPath(), None, 0, 0, 0
    cpu0, samples = time.process_time(), []
    for n, raw in enumerate(_records(events), 1):
        path(raw)
        since_start += 1
        # The planner looks at its memory every second (~10,000 events at
        # most) and snapshots at once when over its budget.
        over = budget is not None and n % 1000 == 0 and planner_memory.compaction_due(
            resident_in_use_bytes(), budget, last, since_start, planner_memory.MIN_RECORDS)
        if n % every and not over:
            continue
        reuse, _ = b._snapshot({}, "s", path.state, path.event_ids, reuse, where)
        in_use = resident_in_use_bytes()
        if planner_memory.compaction_due(in_use, budget, last, since_start,
                                         planner_memory.MIN_RECORDS):
            # What the runtime does on a Compaction: the old planner dropped,
            # its frozen objects collected, the snapshot just written restored.
            compactions, last, since_start = compactions + 1, in_use, 0
            del path
            planner_compaction.drop_frozen_state()
            with collector_paused():
                loaded = planner_snapshots.read(where, max_age=None, calstream_version="bench")
                reuse = BlockCache()
                states, _, _, event_ids = planner_snapshot.restore(
                    loaded.body, **b.RecordPath.settings(), reuse=reuse)
                del loaded
                gc.freeze()
            path = b.RecordPath()
            path.state, path.event_ids = states["live"], event_ids
            del states
            samples.append(f"{round(in_use / MiB)}->{round(resident_in_use_bytes() / MiB)}")
        else:
            samples.append(round(in_use / MiB))
    peak = max(int(str(v).split("->")[0]) for v in samples)
    return {"budget_mb": budget_mb, "in_use_mib_at_each_snapshot": samples,
            "peak_mib": peak, "compactions": compactions,
            "cpu_s": round(time.process_time() - cpu0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--every", type=int, default=50_000, help="events between snapshots")
    ap.add_argument("--budget-mb", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child's budget
    args = ap.parse_args()
    if args.one is not None:
        with tempfile.TemporaryDirectory() as where:
            print(json.dumps(one_run(args.events, args.every, args.one, where)))
        return 0
    for _ in range(args.rounds):
        for budget in (0, args.budget_mb):  # A: no budget (as before), B: the budget
            out = subprocess.run([sys.executable, __file__, "--events", str(args.events),
                                  "--every", str(args.every), "--one", str(budget)],
                                 capture_output=True, text=True, check=True)
            print(out.stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
