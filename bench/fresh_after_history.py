"""What a fresh product event costs the planner after H events of history.

``bench_planner.py`` times fresh events over its stream (20,000 events by
default), so the state they meet is never larger than that. A planner that
has run for weeks holds far more (until its memory budget compacts it:
docs/operations.md, ``planner_memory_mb``). Here H events (programs of
1,000 exposures) are decided first, untimed, and then the next ``--probe``
fresh events are timed in CPU time, on the whole record path
(``RecordPath``); histories take turns within each round and rounds repeat,
so a drift of the machine hits every history alike. Each history starts in
a fresh process, so no run inherits another's heap.

    .venv/bin/python bench/fresh_after_history.py
    .venv/bin/python bench/fresh_after_history.py --histories 0,20000,100000,300000 --rounds 2
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_planner import RecordPath, program_records  # noqa: E402

SIZE = 1000  # exposures a program: 2,000 events


def one(history: int, probe: int) -> float:
    """µs of CPU per fresh event for ``probe`` events after ``history`` events."""
    path = RecordPath()
    programs = history // (2 * SIZE)
    for p in range(programs):
        for raw in program_records(p + 1, SIZE):
            path(raw)
    extra = -(-probe // (2 * SIZE))
    timed = [r for p in range(programs, programs + extra)
             for r in program_records(p + 1, SIZE)][:probe]
    gc.collect()
    started = time.process_time()
    for raw in timed:
        path(raw)
    return (time.process_time() - started) / len(timed) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--histories", default="0,20000,100000,300000")
    ap.add_argument("--probe", type=int, default=5000, help="fresh events timed")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child's history
    args = ap.parse_args()
    if args.one is not None:
        print(one(args.one, args.probe))
        return 0
    histories = [int(h) for h in args.histories.split(",")]
    runs: dict[int, list[float]] = {h: [] for h in histories}
    for r in range(args.rounds):
        for h in histories if r % 2 == 0 else histories[::-1]:
            out = subprocess.run([sys.executable, __file__, "--one", str(h),
                                  "--probe", str(args.probe)],
                                 check=True, capture_output=True, text=True).stdout
            runs[h].append(float(out))
    print(json.dumps({f"{h} events of history": {
        "cpu_us_per_fresh_event": round(statistics.median(v), 1),
        "spread": [round(min(v), 1), round(max(v), 1)],
        "events_per_cpu_s": round(1e6 / statistics.median(v))} for h, v in runs.items()},
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
