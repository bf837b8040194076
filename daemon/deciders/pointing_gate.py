"""The last door before stage 2 and stage 3: provisional pointing (pure).

The planner holds an exposure whose ENGQLPTG is PLANNED, and orders it
only with a correction or an operator's release, which the order carries
(``releases``, by exposure id). The planner reads that from the product
event's copy; the stage consumers read the files. So a stage-2 or stage-3
order is run only if every per-exposure input whose own primary header says
PLANNED is released by the order itself: a forged or mistaken order, or a
forged product event that called a PLANNED file CALCULATED, ends here as a
dead letter instead of leaking provisional pointing into a product. A
corrected input is released too: stage 2 applies the correction to a copy,
and the cal file it writes carries the corrected ENGQLPTG.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from calstream.daemon.deciders.admission import Verdict, bad_input
from calstream.steps.naming import BadName, parse_exposure_name

PLANNED = "PLANNED"


def exposure_of_input(path: str) -> str | None:
    """The exposure a per-exposure product (``<exposure>_<suffix>.fits``) is
    of; None for anything else (a level-3 product, a catalog): those have no
    pointing of their own to hold."""
    name = PurePosixPath(path).name
    if not name.endswith(".fits"):
        return None
    try:
        return parse_exposure_name(name).exposure_id
    except BadName:
        return None


def planned_inputs_problem(order: dict[str, Any],
                           qualities: dict[str, str | None]) -> Verdict | None:
    """``qualities``: each per-exposure input's path -> the ENGQLPTG its own
    primary header has (None: none, or unreadable; the run judges that)."""
    released = order.get("releases") or {}
    held = sorted(f"{PurePosixPath(path).name}" for path, quality in qualities.items()
                  if quality is not None and str(quality).strip().upper() == PLANNED
                  and exposure_of_input(path) not in released)
    if not held:
        return None
    shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
    return bad_input(f"input(s) {shown} have ENGQLPTG=PLANNED in their own header and the "
                     "order carries no correction or release for them: provisional pointing "
                     "goes no further than detector1 until corrected or released")
