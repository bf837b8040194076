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

from functools import cache
from pathlib import PurePosixPath
from typing import Any

import jsonschema

from calstream.daemon.deciders.admission import Verdict, bad_input
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.topics import contract

PLANNED = "PLANNED"


def is_planned(quality: object) -> bool:
    """Whether an ENGQLPTG value is PLANNED, as the file's own header is read
    here: blanks and case aside. The planner's hold (planner_records.Seen),
    the detector1 event's flag (work_items) and this gate ask the same
    question: before, the planner compared the text exactly, so a file
    whose header said ``planned`` was neither held nor correctable (a
    pointing update was refused as "not held"), and every stage-2 order of
    it ended here as a dead letter."""
    return quality is not None and str(quality).strip().upper() == PLANNED


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
                  if is_planned(quality)
                  and exposure_of_input(path) not in released)
    if not held:
        return corrections_problem(order, qualities)
    shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
    return bad_input(f"input(s) {shown} have ENGQLPTG=PLANNED in their own header and the "
                     "order carries no correction or release for them: provisional pointing "
                     "goes no further than detector1 until corrected or released")


def corrections_problem(order: dict[str, Any],
                        qualities: dict[str, str | None]) -> Verdict | None:
    """A run applies the order's pointing corrections to a copy of each
    member they name (steps/association_run.py): the product's WCS is then
    the order's. The planner makes one only for a held input (its own header
    PLANNED) that the correction released, as that release's keywords
    (holds.release_notes). Anything else was not the planner's: before, a
    forged order rewrote the pointing of any exposure, a CALCULATED one too.
    ``qualities`` as for ``planned_inputs_problem``; a file whose header is
    unreadable is left to the run, as there."""
    corrections = (order.get("parameters") or {}).get("pointing_corrections")
    if not corrections:
        return None
    if not isinstance(corrections, dict):
        return bad_input("its pointing corrections are not an object")
    by_name = {PurePosixPath(path).name: (path, quality) for path, quality in qualities.items()}
    released = order.get("releases") or {}
    for name, fix in corrections.items():
        shown = repr(name[:200])
        path, quality = by_name.get(name, (None, None))
        if path is None:
            return bad_input(f"a pointing correction for {shown}, no per-exposure input of it")
        if quality is not None and not is_planned(quality):
            return bad_input(f"a pointing correction for {shown}, whose own header says "
                             f"ENGQLPTG = {str(quality)[:40]!r}: only held pointing is corrected")
        release = released.get(exposure_of_input(path))
        keywords = fix.get("keywords") if isinstance(fix, dict) else None
        if not isinstance(release, dict) or release.get("path") != "pointing" \
                or release.get("keywords") != keywords:
            return bad_input(f"a pointing correction for {shown} that no release of the order "
                             "carries (a correction's release has its keywords)")
        if not _keywords_validator().is_valid(keywords):
            return bad_input(f"a pointing correction for {shown} whose keywords no pointing "
                             "update could carry")
    return None


@cache
def _keywords_validator() -> jsonschema.protocols.Validator:
    # The keywords a pointing update may carry (its schema: the known
    # keywords, angles in their ranges), the only source of a correction.
    keywords = contract.schema("pointing_update")["properties"]["keywords"]
    return jsonschema.Draft202012Validator(keywords)
