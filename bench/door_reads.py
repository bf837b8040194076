"""The watcher's reads of one arrival, this code against another checkout's.

Each arrival costs the daemon's main process the watcher's structure walk
(``fits_layout``) and identity check (``describe_exposure``) before the file
is hashed (issue 15: at SUB160 the main process's CPU is a few per cent of
a run's). Here both are timed on the same synthetic uncal files, in fresh
processes, the two checkouts taking turns (A B B A A B ...) and repeated:
CPU and wall milliseconds per file, medians with their spread, and the
ratio of the two codes' CPU per round.

    .venv/bin/python bench/door_reads.py --before DIR [--repeats 6] [--full]

DIR holds another checkout's ``calstream`` package (as bench_detector1.py's
``--before``). ``--full``: 2048x2048 files with 10 groups (the default is
the bench's SUB160 with 5 groups).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measuring import spread

_MEASURE = """
import json, sys, time
from calstream.steps.exposure import describe_exposure
from calstream.steps.fitsfile import fits_layout
files, n = sys.argv[1:], 200
for f in files:  # imports, caches and the page cache warmed, untimed
    fits_layout(f), describe_exposure(f)
out = {}
for name, fn in (("layout", fits_layout), ("describe", describe_exposure)):
    w, c = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(files[i % len(files)])
    out[name] = ((time.process_time() - c) / n * 1e3, (time.perf_counter() - w) / n * 1e3)
print(json.dumps(out))
"""


def measure(files: list[Path], code: Path | None) -> dict[str, tuple[float, float]]:
    env = {**os.environ, **({"PYTHONPATH": str(code)} if code else {})}
    done = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, files)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()

    from calstream.steps.synthetic.kit import build_kit
    from calstream.steps.synthetic.program import ProgramSpec

    size = {"subarray": "FULL", "ngroups": 10} if args.full else {}
    tmp = Path(tempfile.mkdtemp(prefix="calstream-door-"))
    files = build_kit(tmp / "kit", ProgramSpec(dithers=4, **size), seed=11,
                      references=False).uncal_files
    runs: dict[str, list[dict]] = {"this": [], "before": []}
    for r in range(args.repeats):
        order = ["this", "before"] if r % 4 in (0, 3) else ["before", "this"]  # ABBA
        for code in order:
            runs[code].append(measure(files, None if code == "this" else args.before))
    result: dict = {"files": len(files), "size": "FULL" if args.full else "SUB160",
                    "repeats": args.repeats, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    for part in ("layout", "describe"):
        for code, rows in runs.items():
            result[f"{part} cpu ms ({code})"] = spread([x[part][0] for x in rows], 3)
            result[f"{part} wall ms ({code})"] = spread([x[part][1] for x in rows], 3)
        result[f"{part} cpu this/before"] = spread(
            [a[part][0] / b[part][0] for a, b in zip(runs["this"], runs["before"], strict=True)],
            3)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
