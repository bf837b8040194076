"""What two processes at once cost each other on this machine, without jwst.

One process streams through two arrays (``b = a * k``, then swap) alone, then
two such processes at once, alternately (ABAB), for several working-set
sizes: a set that fits the shared last-level cache alone but not twice
shows a pair losing what one alone keeps. This is the machine's share of
the gap between bench_detector1's limit (runs alone) and its pair (runs at
once), measured without the pipeline, the daemon or the disk.

    .venv/bin/python bench/cache_contention.py [--sizes-mb 1,16,160] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_STREAM = """
import sys, time
import numpy as np
size = int(sys.argv[1])
a = np.ones(size // 16)  # two arrays of size / 2 bytes each
b = np.ones_like(a)
passes = max(1, int(4e9 // size))
np.multiply(a, 1.0001, out=b)  # pages touched before the clock
start = time.perf_counter()
for _ in range(passes):
    np.multiply(a, 1.0001, out=b)
    a, b = b, a
print(size * passes / (time.perf_counter() - start) / 1e9)  # GB/s read + written
"""


def gbps(size: int, at_once: int) -> list[float]:
    procs = [subprocess.Popen([sys.executable, "-c", _STREAM, str(size)], stdout=subprocess.PIPE,
                              text=True) for _ in range(at_once)]
    return [float(p.communicate()[0]) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes-mb", default="1,8,16,32,160", help="working set of one process")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = {}
    for mb in map(int, args.sizes_mb.split(",")):
        alone, pair = [], []
        for _ in range(args.repeats):
            alone += gbps(mb * 10**6, 1)
            pair.append(statistics.mean(gbps(mb * 10**6, 2)))
        rows[mb] = {"alone_gbps": round(statistics.median(alone), 1),
                    "each_of_two_gbps": round(statistics.median(pair), 1),
                    "two_at_once_vs_alone": round(statistics.median(pair) / statistics.median(alone), 2)}
        print(f"{mb:5d} MB: alone {rows[mb]['alone_gbps']:6.1f} GB/s, each of two at once "
              f"{rows[mb]['each_of_two_gbps']:6.1f} GB/s ({rows[mb]['two_at_once_vs_alone']:.2f})",
              flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
