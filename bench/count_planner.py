"""The planner's record path in instructions per fresh event, counted by valgrind.

On a shared 2-core machine the CPU time of the same code moves by 20-40 %
between runs minutes apart, so a change worth a few per cent cannot be seen
in ``bench_planner.py``'s events per second. Instructions executed do not
depend on the neighbours: callgrind counts them the same on every run (with
the hash seed fixed, as here). Each checkout is counted twice, with and
without ``--events`` fresh events after the same warm-up, and the difference
is divided by the events: setup and imports drop out.

What a count does not say: time. Cache misses, which the planner's fresh
objects cause, are not in it; and under valgrind OpenSSL has no SHA
instructions, so sha256 and blake2b count several times what they cost
natively. Compare two checkouts' counts of the same part, not a count
against a time.

How far to trust a ratio: two processes of the same code differed by 0.05 %
in their totals, but a count per event is the difference of two totals, and
repeated comparisons of the same two checkouts gave ratios up to 5 % apart
(session 11, bench/README.md). Repeat a comparison, and take a difference
under about 5 % for noise. That is still far finer than CPU time here, which
moved by 20-30 % between runs minutes apart.

    .venv/bin/python bench/count_planner.py                          # the whole record path
    .venv/bin/python bench/count_planner.py --part decide --before /tmp/base-pkg

``--part``: ``whole`` (``bench_planner.RecordPath``), ``take`` (the way in)
or ``decide`` (``PlannerState.observe`` on events taken beforehand).
``--batch N``: the whole path takes N records together, as the planner
loop takes a fetch's (``TAKEN_AHEAD``); 1 by default, as before session 44.
``--before``: a PYTHONPATH holding another checkout's ``calstream`` package
(see bench/README.md), counted the same way beside this one. Needs
valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()


def feed(part: str, events: int, batch: int = 1) -> None:
    """Run in the counted process: warm up, then ``events`` fresh events."""
    sys.path.insert(0, str(HERE.parent))
    from bench_planner import RecordPath, program_records

    from calstream.topics import contract

    warm = list(program_records(1, 1000))[:40]  # validators built, memos filled
    program = list(program_records(2, 1000))  # another program: every event new
    fresh = program[:events]
    path = RecordPath()
    for raw in warm:
        path(raw)
    # The collector off while counting: where its collections fall depends on
    # how many objects came before, and one more or fewer in the window moved
    # the count by a few per cent. What it will have to walk is counted instead:
    # the objects it tracks that the events leave alive.
    gc.collect()
    gc.disable()
    tracked = len(gc.get_objects())
    if part == "whole":
        for first in range(0, len(fresh), batch):
            path.batch(fresh[first:first + batch])
    elif part == "take":
        for raw in fresh:
            path.intake.take(raw, path.event_ids)
    else:
        taken = []  # the whole program taken, counted or not: only deciding differs
        for raw in program:
            event, _ = path.intake.take(raw, path.event_ids)
            taken.append((event, contract.parse_time(event["emitted_at"]).timestamp()))
        tracked = len(gc.get_objects())
        observe = path.state.observe
        for event, now in taken[:events]:
            observe(event, now)
    print(json.dumps({"tracked": len(gc.get_objects()) - tracked}))


def counted(part: str, events: int, pythonpath: str | None, batch: int = 1) -> tuple[int, int]:
    """(instructions, objects left tracked) of one process that feeds ``events`` events."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    # Address randomisation off where setarch can do it: objects hashed by
    # their address would collide differently in every run.
    fixed = ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []
    done = subprocess.run(
        [*fixed, "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, str(HERE), "--feed", part, "--events", str(events),
         "--batch", str(batch)],
        capture_output=True, text=True, env=env, check=True)
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if not found:
        raise RuntimeError(f"no count in valgrind's output: {done.stderr[-2000:]}")
    return int(found.group(1)), json.loads(done.stdout.strip().splitlines()[-1])["tracked"]


def per_event(part: str, events: int, pythonpath: str | None,
              batch: int = 1) -> dict[str, float]:
    # Once without valgrind first: a source changed since its last import is
    # compiled (and its .pyc written) there, not inside a counted run.
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    subprocess.run([sys.executable, str(HERE), "--feed", part, "--events", "0"],
                   capture_output=True, env=env, check=True)
    # Without the events the program's records are still made (the list is
    # sliced, not skipped): only the events' own work is in the difference.
    (with_events, tracked), (without, _) = (counted(part, events, pythonpath, batch),
                                            counted(part, 0, pythonpath, batch))
    n = max(events, 1)
    return {"instructions": (with_events - without) // n, "tracked_objects": round(tracked / n, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--part", choices=("whole", "take", "decide"), default="whole")
    ap.add_argument("--events", type=int, default=2000,
                    help="fresh events counted (at most 2000: one program of 1,000 exposures)")
    ap.add_argument("--before", metavar="PYTHONPATH",
                    help="also count the calstream package found on this path")
    ap.add_argument("--batch", type=int, default=1,
                    help="whole: records taken together, as the planner loop takes a fetch's "
                         "(its TAKEN_AHEAD, 128; 1 until session 44)")
    ap.add_argument("--feed", choices=("whole", "take", "decide"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.feed:
        feed(args.feed, args.events, max(1, args.batch))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    events = max(1, min(args.events, 2000))  # one program's events, at least one
    batch = max(1, args.batch)
    figures = {"part": args.part, "events": events, "batch": batch,
               "per_event": per_event(args.part, events, None, batch)}
    if args.before:
        before = figures["before"] = per_event(args.part, events, args.before, batch)
        figures["ratio"] = round(figures["per_event"]["instructions"] / before["instructions"], 4)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
