"""The planner's decisions alone: CPU per fresh product event, the way in excluded.

``bench_planner.py`` times the whole record path (decode, trust checks,
event-id check, decision). Here the same synthetic programs are taken in
first (``RecordPath.intake``, not timed), then ``PlannerState.observe`` is
timed event by event in CPU time, detector1 and stage-2 events apart, so a
change to the decisions is seen without the way in's share (about half of a
fresh event). Each figure is the median over ``--repeats`` fresh states.

    .venv/bin/python bench/bench_decisions.py
    .venv/bin/python bench/bench_decisions.py --sizes 10,1000,10000 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_planner import RecordPath, program_records  # noqa: E402

from calstream.topics import contract  # noqa: E402


def decisions(size: int, events: int, repeats: int) -> dict[str, float]:
    """µs of CPU per event of each stage, median of ``repeats``."""
    programs = max(1, -(-events // (2 * size)))
    stream = [r for p in range(programs) for r in program_records(p + 1, size)]
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        path = RecordPath()
        taken = []
        for raw in stream:
            event, problems = path.intake.take(raw, path.event_ids)
            if problems:
                raise AssertionError(f"the bench's own event is refused: {problems}")
            taken.append((event, contract.parse_time(event["emitted_at"]).timestamp()))
        spent: dict[str, float] = {}
        counted: dict[str, int] = {}
        clock = time.process_time
        gc.collect()
        started = clock()
        for event, now in taken:
            stage, before = event["stage"], clock()
            path.state.observe(event, now)
            spent[stage] = spent.get(stage, 0.0) + clock() - before
            counted[stage] = counted.get(stage, 0) + 1
        whole = clock() - started
        for stage, seconds in spent.items():
            runs.setdefault(stage, []).append(seconds / counted[stage] * 1e6)
        runs.setdefault("every event", []).append(whole / len(taken) * 1e6)
    return {k: round(statistics.median(v), 1) for k, v in runs.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10,1000,10000", help="exposures per program")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--events", type=int, default=5000)
    args = ap.parse_args()
    table = {f"{size} exposures per program, µs of CPU per event":
             decisions(size, args.events, args.repeats)
             for size in (int(s) for s in args.sizes.split(","))}
    print(json.dumps(table, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
