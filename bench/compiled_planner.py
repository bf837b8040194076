"""A throwaway copy of calstream with the planner's record path compiled by mypyc.

For measuring only: it is not how calstream installs (session 45,
bench/README.md: the gain was ~1.3x, short of issue 14's 20,000 events a
CPU-second, and the compiled form decides differently where annotations are
untrue). DIR receives ``calstream/`` (this checkout's three rooms), the few
edits mypyc needs to build and run the bench's stream (``ADAPTATIONS``, each
refused loudly once the code it edits has changed), and the extension
modules, built in place; then it takes the place of a ``--before`` package:

    .venv/bin/python -m pip install mypy          # mypyc comes with it; not a dependency
    .venv/bin/python bench/compiled_planner.py /tmp/compiled
    PYTHONPATH=/tmp/compiled .venv/bin/python bench/bench_planner.py --no-restart --sizes 10,1000
    .venv/bin/python bench/count_planner.py --batch 128 --before /tmp/compiled
    .venv/bin/python bench/planner_parts.py --before /tmp/compiled

mypy's type errors would stop mypyc; the codes mypy reports on these modules
are turned off for the build, so where an annotation is untrue the compiled
code raises TypeError at run time (the list in bench/README.md, session 45).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The modules cProfile finds on bench_planner.RecordPath (session 45), by
# their installed names. steps/kept_hash.py is left out: a compiled function
# set in a class body (``__hash__ = kept_hash``) is not bound as a method.
HOT = [
    "daemon/deciders/" + m for m in (
        "event_checks", "planner_state", "level3_state", "level3_membership",
        "product_intake", "level2_orders", "companion_index", "planner_records",
        "visit_counts", "admission", "level3_candidates", "pointing_gate",
        "order_parameters", "bulkhead", "level3_members", "direct_image_holds", "holds")
] + ["steps/" + m for m in (
    "visit_tally", "keyword_memo", "exposure", "routing_terms", "naming", "header_checks",
    "completeness", "routing", "associations/filenames", "associations/level2",
    "associations/matching", "associations/level3_candidates")
] + ["topics/" + m for m in ("contract", "canonical_json", "times")]

_NON_NATIVE = "@mypyc_attr(native_class=False)\n"
_IMPORT = "from __future__ import annotations\n\nfrom mypy_extensions import mypyc_attr\n"

# (file, text, replacement, why): what mypyc cannot build or run as written.
ADAPTATIONS = [
    ("daemon/deciders/holds.py", "class WaitingUpdates:",
     "WAITING_CAPACITY = 10_000\n\n\nclass WaitingUpdates:",
     "a class attribute named in a default of its own methods is not defined yet"),
    ("daemon/deciders/holds.py", "capacity: int = CAPACITY)", "capacity: int = WAITING_CAPACITY)",
     "(the same)"),
    ("steps/routing.py", "@dataclass(frozen=True)\nclass Route:",
     _NON_NATIVE + "@dataclass(frozen=True)\nclass Route:",
     "__hash__ = kept_hash and __getstate__: read-only on a native class"),
    ("steps/naming.py", "@dataclass(frozen=True)\nclass ExposureName:",
     _NON_NATIVE + "@dataclass(frozen=True)\nclass ExposureName:",
     "its fields are set through __dict__, which a native class has not"),
    ("steps/associations/level3_candidates.py", "@dataclass(frozen=True)\nclass Level3Key:",
     _NON_NATIVE + "@dataclass(frozen=True)\nclass Level3Key:", "as Route"),
    ("steps/associations/records.py", "def name(self) -> ExposureName:", "def name(self) -> Any:",
     "deciders/level3_candidates.py sets a _NameFacts there, which is no ExposureName"),
    ("steps/associations/matching.py", "sorted(nod_positions(science) - partners.keys())",
     "sorted(nod_positions(science).difference(partners))",
     "frozenset - dict_keys is a set at run time, a frozenset to mypy"),
]


def copy_tree(dest: Path) -> None:
    package = dest / "calstream"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    shutil.copy(REPO / "daemon/calstream_package/__init__.py", package / "__init__.py")
    skip = shutil.ignore_patterns("__pycache__", "*.so", "calstream_package")
    for room in ("daemon", "steps", "topics"):
        shutil.copytree(REPO / room, package / room, ignore=skip)


def adapt(package: Path) -> None:
    for name, text, replacement, why in ADAPTATIONS:
        path = package / name
        source = path.read_text()
        if text not in source:
            raise SystemExit(f"{name}: {text!r} not found; the adaptation ({why}) "
                             "needs redoing for this code")
        source = source.replace(text, replacement)
        if _NON_NATIVE in replacement and "import mypyc_attr" not in source:
            source = source.replace("from __future__ import annotations\n", _IMPORT, 1)
        path.write_text(source)


def build(dest: Path) -> float:
    files = [f"calstream/{m}.py" for m in HOT]
    flags = ["--ignore-missing-imports", "--follow-imports=silent"]
    checked = subprocess.run([sys.executable, "-m", "mypy", *flags, *files], cwd=dest,
                             capture_output=True, text=True)
    codes = sorted(set(re.findall(r"\[([a-z-]+)\]$", checked.stdout, re.MULTILINE)))
    for code in codes:
        flags += ["--disable-error-code", code]
    print(f"mypy: {checked.stdout.count(': error:')} errors ({', '.join(codes)}) "
          "turned off for the build", file=sys.stderr)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mypyc", *flags, *files], cwd=dest, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="where calstream/ is copied and built")
    args = parser.parse_args()
    try:
        import mypyc  # noqa: F401
    except ImportError:
        print("mypyc is missing: .venv/bin/python -m pip install mypy", file=sys.stderr)
        return 2
    dest = args.dest.resolve()
    copy_tree(dest)
    adapt(dest / "calstream")
    seconds = build(dest)
    print(f"{len(HOT)} modules compiled in {seconds:.0f} s; "
          f"PYTHONPATH={dest} .venv/bin/python bench/bench_planner.py ... to measure them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
