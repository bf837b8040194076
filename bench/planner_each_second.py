"""What the planner does once a second, against the size of its history.

Once caught up, the planner loop (doers/planner_loop.py) ticks each
namespace's state once a second (companions that never came stop blocking,
level-3 candidates settle) and refreshes its gauges and the view /planner
serves: a tick and doers/planner_status.py's ``_set_gauges`` and ``view``
(``status_of`` says what an older checkout does instead). That time is taken from the
decisions, on the planner's one core, so it must not grow with the
history: months of retained events are a million and more.

For each history (bench_planner.py's: programs of 1,000 NIRCam exposures,
each event decided as it came; kept in ``--work-dir``, so a later run
restores it from that snapshot, as a restarted planner has its state,
where a first run times the state it built), one
second's work is done once to settle (the first tick orders what the
quiet periods let through, the first summary writes out what each level-3
candidate waits for), then ``--repeats`` times, timed: the median
milliseconds of wall and CPU time a second, beside the candidates still
open (the ones a tick has to look at). ``--during-quiet-period``: time 10 s
after the history's last event instead of long after, so the last
observation's level-3 candidate is still open (in its quiet period), as a
live planner's latest ones are.

    .venv/bin/python bench/planner_each_second.py [--histories 10000,100000,1000000]
    PYTHONPATH=/tmp/before-pkg .venv/bin/python bench/planner_each_second.py \\
        --work-dir /tmp/bench-planner-before      # another checkout's planner
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_planner  # noqa: E402 - the bench's histories, beside this file


def status_of(state, now: float):
    """The planner's status work of one second for this one namespace, as
    the checkout's loop does it: doers/planner_status.py's gauges and view
    (``refresh``, since session 31: what each asks of the summary, e.g.
    session 46's counts for the gauges and the first 100 for the view),
    on a stand-in planner holding this state; before that module, the two
    whole summaries Planner._set_gauges and Planner.view made."""
    try:
        from calstream.daemon.doers import planner_status
        from calstream.daemon.operations.metrics import Metrics
    except ImportError:
        return lambda: (state.summary(now), state.summary(now))

    class NoUpdates:
        def exposures(self) -> list:
            return []

        def __len__(self) -> int:
            return 0

    planner = SimpleNamespace(metrics=Metrics(), programs_missing=set(), state=state,
                              clock=SimpleNamespace(now=lambda: now), states={"live": state},
                              holds=state.holds, plans={}, caught_up=True, restored_from=None,
                              pointing_waiting=NoUpdates())

    def status() -> None:
        planner_status._set_gauges(planner)
        planner_status.view(planner)
    return status


def one_second(state, now: float, status) -> None:
    """What doers/planner_loop.py does once a second for one namespace."""
    state.tick(now)
    status()


def measure(total: int, repeats: int, work: str, during_quiet_period: bool = False) -> dict:
    path = bench_planner.built_history(total, work)
    state = path.state
    if during_quiet_period:  # 10 s after the last event: its observation is still open
        now = max(s.since for s in state.exposures.values()) + 10
    else:
        now = bench_planner.T0 + 10**7  # long after the history: every wait is over
    status = status_of(state, now)
    one_second(state, now, status)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        one_second(state, now, status)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    open_ = getattr(state, "open_candidates", None)
    return {"ms_wall": round(statistics.median(walls) * 1e3, 2),
            "open_level3": sum(c.is_open for c in state.stage3.candidates.values()),
            "ms_cpu": round(statistics.median(cpus) * 1e3, 2),
            "spread_ms_wall": [round(min(walls) * 1e3, 2), round(max(walls) * 1e3, 2)],
            "level2_candidates": len(state.candidates),
            "open_level2": len(open_) if open_ is not None else None,
            "level3_candidates": len(state.stage3.candidates)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--histories", default="10000,100000,1000000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work-dir", default="/tmp/bench-planner")
    ap.add_argument("--during-quiet-period", action="store_true")
    args = ap.parse_args()
    table = {}
    for total in (int(h) for h in args.histories.split(",")):
        table[f"{total} events"] = measure(total, args.repeats, args.work_dir,
                                           args.during_quiet_period)
        print(json.dumps({f"{total} events": table[f"{total} events"]}), flush=True)
    print(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
