"""The planner's record path in parts, this code against another checkout's.

``bench_planner.py`` times the whole path; a saving of a few per cent is
lost in its spread on a shared machine. Here each part is timed apart, in
fresh processes, the two checkouts taking turns (A B B A ...) and repeated:
CPU microseconds an event of the way in (``ProductIntake.take_each``, a
fetch of ``TAKEN_AHEAD`` records at a time) for detector1 and stage-2 events
apart (a fetch's records of each stage taken together), and of the decision (``PlannerState.observe``) for each; how many
times a time text is parsed an event (``fromisoformat`` calls, counted); and
the memory in use an exposure once every event is decided (resident, less
what the heap keeps free: doers/process_memory.py). The collector is off
while timing (its collections fall where the objects before them put
them); the memory is measured after a full collection.

    .venv/bin/python bench/planner_parts.py --before DIR [--rounds 4] [--exposures 4000]

DIR holds another checkout's ``calstream`` package (bench/README.md). The
events are bench_planner.py's (programs of 2,000 exposures, this checkout's
script for both codes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_MEASURE = r"""
import datetime as dt, gc, json, sys, time, types
sys.path.insert(0, sys.argv[1])
import bench_planner as b
from calstream.daemon.doers.process_memory import resident_in_use_bytes
from calstream.topics import contract, times
exposures = int(sys.argv[2])
records = [r for p in range(1, exposures // 2000 + 1) for r in b.program_records(p, 2000)]
warm = b.RecordPath()
for first in range(0, 400, b.TAKEN_AHEAD):  # imports, validators, memos
    warm.batch(list(b.program_records(99, 200))[first:first + b.TAKEN_AHEAD])
parsed = [0]
class Counted(dt.datetime):
    @classmethod
    def fromisoformat(cls, text):
        parsed[0] += 1
        return dt.datetime.fromisoformat(text)
times.dt = types.SimpleNamespace(UTC=dt.UTC, datetime=Counted)
path = b.RecordPath()
gc.collect()
memory = resident_in_use_bytes()
gc.disable()
cpu = {"take detector1": 0, "take stage2": 0, "decide detector1": 0, "decide stage2": 0}
n = {"detector1": 0, "stage2": 0}
clock = time.process_time_ns
for first in range(0, len(records), b.TAKEN_AHEAD):
    fetch = records[first:first + b.TAKEN_AHEAD]
    # A fetch's detector1 records taken together, then its stage-2 records
    # (each after its own detector1 event still), then all decided in order.
    stages = [b"\"stage\":\"detector1\"" in raw for raw in fetch]
    taken = {}
    for stage, first_stage in (("detector1", True), ("stage2", False)):
        mine = [i for i, s in enumerate(stages) if s is first_stage]
        started = clock()
        for i, t in zip(mine, path.intake.take_each([fetch[i] for i in mine], path.event_ids)):
            taken[i] = t
        cpu["take " + stage] += clock() - started
    for i in range(len(fetch)):
        event, problems = taken[i]
        assert not problems, problems
        stage = event.body["stage"]
        n[stage] += 1
        started = clock()
        path.state.observe(event, contract.parse_time(event["emitted_at"]).timestamp())
        cpu["decide " + stage] += clock() - started
gc.enable()
gc.collect()
out = {k: v / n[k.split()[1]] / 1000 for k, v in cpu.items()}
out["time parses an event"] = parsed[0] / len(records)
out["kB an exposure"] = (resident_in_use_bytes() - memory) / (len(records) / 2) / 1000
print(json.dumps(out))
"""


def measure(code: Path | None, exposures: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONHASHSEED": "0", **({"PYTHONPATH": str(code)} if code else {})}
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(HERE), str(exposures)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--exposures", type=int, default=4000, help="a multiple of 2,000")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"this": [], "before": []}
    for r in range(args.rounds):
        order = ("this", "before") if r % 2 == 0 else ("before", "this")
        for who in order:
            runs[who].append(measure(None if who == "this" else args.before, args.exposures))
    table = {}
    for part in runs["this"][0]:
        this = [run[part] for run in runs["this"]]
        before = [run[part] for run in runs["before"]]
        ratios = [a / b for a, b in zip(this, before, strict=True) if b]
        table[part] = {"this": round(statistics.median(this), 2),
                       "before": round(statistics.median(before), 2),
                       "ratio per round": [round(min(ratios), 3), round(statistics.median(ratios), 3),
                                           round(max(ratios), 3)] if ratios else None}
    print(json.dumps({"rounds": args.rounds, "exposures": args.exposures, "parts": table},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
