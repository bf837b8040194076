"""Is what an uncal header says possible? Judged before anything trusts it.

A header is written by someone else's software and is untrusted like any
input. A count that is not a positive integer (``NGROUPS = 0``, ``NaN``,
``1e20``, ``-5``), or pixel data whose shape contradicts the counts, would
otherwise reach the planner as "a visit of -5 exposures" or a pipeline as an
array it cannot read: each gets a reason here, and the watcher quarantines
the file with a ``bad_file`` dead letter instead of retrying it for ever.

The bounds are generous ceilings, not instrument rules: they only have to
catch what cannot be an exposure, never refuse a real one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# keyword -> (smallest, largest) value a real exposure can have.
COUNT_BOUNDS: dict[str, tuple[int, int]] = {
    "NGROUPS": (1, 65_535),      # a 16-bit group counter in the science instruments
    "NINTS": (1, 1_000_000),     # the longest time series are tens of thousands
    "NEXPOSUR": (1, 100_000),    # exposures planned in one visit
    "EXSEGTOT": (1, 10_000),     # segments of one exposure
    "EXSEGNUM": (1, 10_000),
    "INTSTART": (1, 1_000_000),
    "INTEND": (1, 1_000_000),
    "SUBSIZE1": (1, 4_096),
    "SUBSIZE2": (1, 4_096),
}
REQUIRED_COUNTS = ("NGROUPS", "NINTS", "NEXPOSUR")


def count_problems(header: Mapping[str, Any],
                   required: tuple[str, ...] = REQUIRED_COUNTS) -> list[str]:
    """Reasons the counts in a primary header are impossible (empty: fine).

    ``required`` counts must be present (a file's header: all three; a
    plan's keywords: none); the others are judged when present.
    """
    problems = []
    for key, (low, high) in COUNT_BOUNDS.items():
        if key not in header:
            if key in required:
                problems.append(f"{key} is missing")
            continue
        value = header[key]
        # bool is an int in Python, and FITS T/F is not a count.
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key} = {value!r} is not an integer")
        elif not low <= value <= high:
            problems.append(f"{key} = {value} is outside {low}..{high}")
    if problems:
        return problems
    segnum, segtot = header.get("EXSEGNUM"), header.get("EXSEGTOT")
    if segnum is not None and segtot is not None and segnum > segtot:
        problems.append(f"EXSEGNUM = {segnum} is beyond EXSEGTOT = {segtot}")
    start, end = header.get("INTSTART"), header.get("INTEND")
    if start is not None and end is not None:
        if start > end:
            problems.append(f"INTSTART = {start} is after INTEND = {end}")
        elif "NINTS" in header and end > header["NINTS"]:
            problems.append(f"INTEND = {end} is beyond NINTS = {header['NINTS']}")
    return problems


def shape_problems(primary: Mapping[str, Any], sci: Mapping[str, Any]) -> list[str]:
    """Reasons the SCI array cannot hold what the primary header describes.

    An uncal SCI array is (NINTS-in-this-file, NGROUPS, rows, columns), i.e.
    NAXIS4, NAXIS3, NAXIS2, NAXIS1 in FITS order. Call only after
    ``count_problems`` found nothing.
    """
    naxis = sci.get("NAXIS")
    if naxis != 4:
        return [f"SCI has NAXIS = {naxis!r}; an uncal exposure has 4 axes "
                "(columns, rows, groups, integrations)"]
    axes = [sci.get(f"NAXIS{i}") for i in range(1, 5)]
    if not all(isinstance(a, int) and not isinstance(a, bool) and a > 0 for a in axes):
        return [f"SCI axes {axes} are not positive integers"]
    columns, rows, groups, ints = axes
    problems = []
    if groups != primary["NGROUPS"]:
        problems.append(f"SCI holds {groups} group(s) but NGROUPS = {primary['NGROUPS']}")
    start, end = primary.get("INTSTART"), primary.get("INTEND")
    want_ints = end - start + 1 if start is not None and end is not None else primary["NINTS"]
    if ints != want_ints:
        where = (f"INTSTART..INTEND = {start}..{end}" if start is not None and end is not None
                 else f"NINTS = {primary['NINTS']}")
        problems.append(f"SCI holds {ints} integration(s) but {where}")
    # NIRSpec IRS2 interleaves reference pixels: its rows exceed SUBSIZE2.
    irs2 = "IRS2" in str(primary.get("READPATT", "")).upper()
    for axis, size, key in ((1, columns, "SUBSIZE1"), (2, rows, "SUBSIZE2")):
        declared = primary.get(key)
        if declared is not None and size != declared and not (irs2 and axis == 2):
            problems.append(f"SCI NAXIS{axis} = {size} but {key} = {declared}")
    return problems
