"""What `calstream replay`'s scan of its source topic holds: memory and time
for a topic of ``--records`` arrivals (session 44; measured again in
session 46, the chosen held packed since session 45: bench/README.md).

The scan (doers/replay_source.py) reads every record of the source topic up
to the high watermarks and hands the replay what it keeps. This feeds it
``--records`` records as the broker would (realistic arrivals: the door's
header copy of a synthetic NIRCam exposure, one exposure id each, spread
over ``--partitions``) through the scan's own per-record code, with no
broker (the reading itself is the consumer's and keeps nothing), and
reports what is held once the replay has chosen (tracemalloc: bytes
allocated and still live; and the peak) and the wall time per 1,000
records, for a replay selecting one program of ``--programs`` and for one
selecting everything. "before" is session 44's scan (every record held
decoded); "sieved" is the scan now: only the chosen, each packed as its
JSON (deciders/replay_packed.py). At 100,000 arrivals (session 46):
69 MiB held for one program of 20, 196 MiB for everything, where every
record held decoded took 412 MiB either way.

    .venv/bin/python bench/replay_scan_memory.py [--records 100000]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections import namedtuple
from pathlib import Path

from calstream.daemon.deciders.replay_selection import (
    Candidate,
    Selection,
    from_their_roots,
    select,
)
from calstream.daemon.deciders.replay_sieve import ScanSieve
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, synthetic_header
from calstream.topics import contract

Record = namedtuple("Record", "partition offset timestamp value")


def arrivals(n: int, partitions: int, programs: int):
    """``n`` encoded arrivals, as ``raw`` holds them."""
    base = {**SMALL_UNCAL_HEADER, **synthetic_header("NIRCAM", "NRC_IMAGE")}
    for i in range(n):
        program = f"{1000 + i % programs:05d}"
        header = {**base, "PROGRAM": program, "EXPOSURE": f"{i % 99999 + 1:05d}",
                  "OBSERVTN": f"{i // 99999 + 1:03d}"}
        eid = (f"jw{program}{header['OBSERVTN']}{header['VISIT']}_{header['VISITGRP']}"
               f"{header['SEQ_ID']}{header['ACT_ID']}_{header['EXPOSURE']}_nrcb1")
        digest = "sha256:" + f"{i:064x}"
        message = contract.build(
            "arrival", contract.event_id("arrival", eid, digest), exposure_id=eid,
            path=f"/data/inbox/{eid}_uncal.fits", digest=digest, size=2_000_000,
            detected_at="2026-12-01T00:00:00.000Z", source="watch", priority="live",
            header=header)
        yield Record(i % partitions, i // partitions, 1_764_547_200_000 + i,
                     contract.encode(message))


class HoldAll:
    """The scan before session 44: every valid record decoded and held,
    then chosen from (as run_replay did, ``found`` alive to its end)."""

    def __init__(self, selection: Selection, roots: dict):
        self.selection, self.roots = selection, roots
        self.kept: list[Candidate] = []

    def take(self, r) -> None:
        try:
            message = contract.decode(r.value)
        except contract.InvalidMessage:
            return
        self.kept.append(Candidate(r.partition, r.offset, r.timestamp, message.body))

    def finish(self) -> int:
        of_kind, _ = from_their_roots(
            [c for c in self.kept if c.message.get("schema") == "calstream.arrival"], **self.roots)
        self.chosen = select(of_kind, self.selection)[0]
        return len(self.chosen)


class Sieved:
    """The scan now (replay_sieve.py)."""

    def __init__(self, selection: Selection, roots: dict):
        self.sieve = ScanSieve("arrival", selection, roots)
        self.take = self.sieve.take

    def finish(self) -> int:
        self.chosen = self.sieve.chooser.result()[0]
        return len(self.chosen)


def measure(records: list, scan) -> tuple[int, int, float, int]:
    """(bytes held after the scan and choice, the peak, seconds, records chosen)."""
    parse_exposure_name.cache_clear()  # a bounded memo both ways fill alike
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    for r in records:
        scan.take(r)
    chosen = scan.finish()
    elapsed = time.perf_counter() - start
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held, peak, elapsed, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--programs", type=int, default=20)
    args = parser.parse_args()
    records = list(arrivals(args.records, args.partitions, args.programs))
    size = sum(len(r.value) for r in records)
    print(f"{args.records} arrivals, {size / args.records:.0f} bytes each encoded "
          f"({size / 2**20:.0f} MiB)")
    roots = {"inbox_roots": [str(Path("/data/inbox"))], "products_root": "/data/products"}
    for label, selection in (("one program", Selection(programs={"01000"})),
                             ("everything", Selection())):
        for how, kind in (("before (all held)", HoldAll), ("sieved", Sieved)):
            held, peak, elapsed, chosen = measure(records, kind(selection, roots))
            print(f"{label:12} {how:18} held {held / 2**20:6.1f} MiB, peak "
                  f"{peak / 2**20:6.1f} MiB, {chosen:6} chosen, "
                  f"{elapsed / args.records * 1000 * 1000:5.1f} ms per 1,000 records")


if __name__ == "__main__":
    main()
