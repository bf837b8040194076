"""What the planner's status costs it each second, a stuck program's
missing exposures against the code before (session 46).

Once caught up, the planner loop refreshes its gauges and the /planner view
once a second (doers/planner_status.py ``refresh``), in its own task, on
its one core. A program whose visits announce many exposures that never
come leaves its candidates open, each naming what it misses: until session
46 the level-3 summary made an entry of every missing exposure and a copy
of each candidate's list, twice a second (gauges, view), and the view kept
100 of each. This builds such a state (``--visits`` visits of one
observation each, one exposure of ``--nexp`` arrived and calibrated, within
their quiet period, as a live planner's latest are, or held open by a
member held or in flight: the tests' events, tests/unit/test_level3_state.py)
and times the gauges and the view together, ``--repeats`` times after one
untimed: median milliseconds of wall and CPU time a second. This checkout
and ``--before`` (a directory holding another checkout's ``calstream``
package) take turns in fresh processes, ABAB, ``--rounds`` times.

``--held`` (beside each ``--visits``, ``0`` for none) adds a program whose
pointing is PLANNED and never corrected: that many exposures held, each a
stage-2 association waiting for its correction; until session 46 (h61) the
summary made a dict of every waiting association's reasons and parsed
every hold's time, twice a second. "same view": the view's JSON had one
digest in every run, both codes.

    .venv/bin/python bench/planner_status_each_second.py --before /tmp/before-pkg \\
        [--visits 40,130] [--nexp 300] [--held 0,10000] [--rounds 4]
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
import hashlib, json, statistics, sys, time
from types import SimpleNamespace
sys.path.insert(0, sys.argv[1])
from calstream.daemon.doers import planner_status
from calstream.daemon.operations.metrics import Metrics
from tests.unit.test_level3_state import QUIET, T0, dither, feed, new_state, rate

visits, nexp, repeats, held = map(int, sys.argv[2:6])
state = new_state()
for visit in range(1, visits + 1):
    feed(state, dither(1, nexp=nexp, OBSERVTN=f"{visit:03d}"), T0 + visit)
for n in range(held):  # PLANNED pointing never corrected: held, stage 2 waiting for it
    at = T0 + n / 1000
    state.observe(rate(dither(1 + n % 100, nexp=100, OBSERVTN=f"{1 + n // 100:03d}",
                              PROGRAM="04567", ENGQLPTG="PLANNED"), at), at)
now = T0 + visits + 60  # within the quiet period: open, waiting for what never came
state.tick(now)
assert now - T0 < QUIET

class NoUpdates:
    def exposures(self):
        return []
    def __len__(self):
        return 0

planner = SimpleNamespace(metrics=Metrics(), programs_missing=set(),
                          clock=SimpleNamespace(now=lambda: now), state=state,
                          states={"live": state}, holds=state.holds, plans={}, caught_up=True,
                          restored_from=None, pointing_waiting=NoUpdates())

def one_second():
    planner_status._set_gauges(planner)
    return planner_status.view(planner)

view = one_second()
walls, cpus = [], []
for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    one_second()
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
stage3 = view["namespaces"]["live"]["stage3"]
print(json.dumps({"ms_wall": statistics.median(walls) * 1e3,
                  "ms_cpu": statistics.median(cpus) * 1e3,
                  "missing": stage3["missing_count"], "open": stage3["open"],
                  "waiting": view["namespaces"]["live"]["stage2_waiting_count"],
                  "held": view["namespaces"]["live"]["held"],
                  "view_bytes": len(json.dumps(view)),
                  "view_sha256": hashlib.sha256(json.dumps(view).encode()).hexdigest()}))
"""


def measure(code: Path | None, visits: int, nexp: int, repeats: int, held: int) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": "0", **({"PYTHONPATH": str(code)} if code else {})}
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(HERE.parent), str(visits),
                           str(nexp), str(repeats), str(held)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--visits", default="40,130")
    parser.add_argument("--nexp", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--held", default="0", help="exposures held for their pointing "
                        "(each a stage-2 association waiting), beside each --visits")
    args = parser.parse_args()
    table = {}
    for visits, held in ((v, h) for v in map(int, args.visits.split(","))
                         for h in map(int, args.held.split(","))):
        runs: dict[str, list[dict]] = {"this": [], "before": []}
        for r in range(args.rounds):
            for who in ("this", "before") if r % 2 == 0 else ("before", "this"):
                runs[who].append(measure(None if who == "this" else args.before, visits,
                                         args.nexp, args.repeats, held))
        row = {"missing": runs["this"][0]["missing"], "open": runs["this"][0]["open"],
               "waiting": runs["this"][0]["waiting"], "held": runs["this"][0]["held"],
               "same view size": runs["this"][0]["view_bytes"] == runs["before"][0]["view_bytes"],
               "same view": len({run["view_sha256"] for who in runs.values() for run in who}) == 1}
        for what in ("ms_wall", "ms_cpu"):
            this = [run[what] for run in runs["this"]]
            before = [run[what] for run in runs["before"]]
            row[what] = {"this": round(statistics.median(this), 2),
                         "before": round(statistics.median(before), 2),
                         "spread this": [round(min(this), 2), round(max(this), 2)],
                         "spread before": [round(min(before), 2), round(max(before), 2)]}
        table[f"{visits} visits, {held} held"] = row
        print(json.dumps({f"{visits} visits, {held} held": row}), flush=True)
    print(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
