"""Planner throughput as its history grows.

The planner (a decider) must keep up with thousands of product events a
second for months. This feeds detector1 product events for P programs of 40
exposures each and reports events per second at a small history (the
baseline) and at a large one, side by side; the ratio should stay near 1.

    python bench/bench_planner.py [--small 5] [--large 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

from calstream.daemon.deciders.planner_state import PlannerState
from calstream.steps.synthetic.headers import exposure_id, synthetic_header
from calstream.topics import contract

T0 = 1_800_000_000.0


def event(program: int, n: int) -> contract.Message:
    header = synthetic_header("NIRCAM", "NRC_IMAGE", PROGRAM=f"{program:05d}",
                              EXPOSURE=f"{n:05d}", NEXPOSUR=40)
    eid = exposure_id(header)
    digest = "sha256:" + hashlib.sha256(eid.encode()).hexdigest()
    wid = hashlib.sha256(digest.encode()).hexdigest()
    return contract.build(
        "product", contract.event_id("product", wid), work_id=wid, stage="detector1",
        pipeline="calwebb_detector1", outcome="success", program=header["PROGRAM"],
        observation=header["OBSERVTN"], exposure_id=eid, product_name=eid, header=header,
        inputs=[{"path": f"/in/{eid}_uncal.fits", "digest": digest}],
        outputs=[{"path": f"/p/{eid}_rate.fits", "digest": digest, "suffix": "rate"}],
        jwst_version="3.0.0", crds_context="jwst_0001.pmap",
        pointing_quality="CALCULATED_TRACK_TR_202111", pointing_provisional=False,
        emitted_at=contract.iso(T0))


def rate(programs: int) -> float:
    """Events per second over the last program, after ``programs - 1`` of history."""
    state = PlannerState(companion_wait=600)
    for p in range(1, programs):
        for n in range(1, 41):
            state.observe(event(p, n), T0)
    last = [event(programs, n) for n in range(1, 41)]
    start = time.perf_counter()
    for e in last * 10:  # the same 40 again count as redeliveries: still decided
        state.observe(e, T0)
    return len(last) * 10 / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--small", type=int, default=5, help="programs of history, baseline")
    ap.add_argument("--large", type=int, default=200, help="programs of history")
    args = ap.parse_args()
    small, large = rate(args.small), rate(args.large)
    figures = {"small_history_exposures": args.small * 40, "large_history_exposures":
               args.large * 40, "small_events_per_s": round(small), "large_events_per_s":
               round(large), "ratio_large_to_small": round(large / small, 2)}
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
