"""A stage-2 order's other members, judged by their own files (pure).

The planner gives a science exposure's level-2 association only companions
of its own program and instrument (steps/associations/matching.py: nods,
dedicated backgrounds, imprints, the visit's TA confirmation, a WFSS direct
image's i2d, catalog and segmentation map of its observation). The order is
a message: admission checked that every member is an input in the product
store with the digest planned and that the science file's own header is the
order's copy (order_header.py), but nothing read the other members. A
forged order naming another program's rate file as its background (or its
i2d as the direct image) ran: program A calibrated with program B's
proprietary data, and A's product written from it.

So each companion's own primary header (jwst writes a rate file with its
exposure's keywords, an i2d and a segmentation map with their members')
must say the order's program and the science file's instrument, and those
the planner takes from the science's observation (TA confirmation, direct
image) its observation. A companion whose header cannot be read cannot be
shown to be the program's: refused (the planner names only products it was
told of, FITS files that jwst wrote). The catalog is no FITS file: it must
be the direct image's own (its name and directory), whose header decides.
A member type the planner never gives (``selfcal``) is refused too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from calstream.daemon.deciders.admission import Verdict, shown_path
from calstream.daemon.deciders.order_header import refused, same_value

# The member types of the planner's level-2 associations (level2._members).
PLANNER_TYPES = frozenset({"science", "background", "imprint", "target_acquisition",
                           "direct_image", "sourcecat", "segmap"})
# Companions the planner takes from the science's own observation only.
SAME_OBSERVATION = frozenset({"target_acquisition", "direct_image", "segmap"})
# The direct image's three files, by member type: one level-3 product's.
_DIRECT_IMAGE_FILES = {"direct_image": "i2d", "sourcecat": "cat", "segmap": "segm"}
CATALOG = "sourcecat"  # no FITS header: judged by the direct image it belongs to


def companions(order: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(path, member type) of every member but the science one, as listed."""
    return [(m["expname"], m["exptype"]) for p in order["association"]["products"]
            for m in p["members"] if m["exptype"] != "science"]


def header_paths(order: Mapping[str, Any]) -> list[str]:
    """The companions whose own header the check reads (all but the catalog)."""
    return [path for path, exptype in companions(order) if exptype != CATALOG]


def companions_problem(order: Mapping[str, Any], science: Mapping[str, Any] | None,
                       own: Mapping[str, Mapping[str, Any] | None]) -> Verdict | None:
    """``science``: the science file's own exposure keywords (None: not FITS,
    the run judges it); ``own``: each of ``header_paths``' (None: unreadable)."""
    problem = _problem(order, science, own)
    return None if problem is None else refused(problem[:1000], dict(order))


def _problem(order, science, own) -> str | None:
    listed = companions(order)
    strange = sorted({str(t) for _, t in listed} - PLANNER_TYPES)
    if strange:
        return f"member type(s) {', '.join(strange)[:200]} no stage-2 order of the planner has"
    program = order["program"]
    instrument = (science or {}).get("INSTRUME") or order.get("instrument")
    observation = (science or {}).get("OBSERVTN") or order.get("observation")
    for path, exptype in listed:
        if exptype == CATALOG:
            continue
        header, name = own.get(path), shown_path(PurePath(path).name)
        if header is None:
            return (f"{exptype} member {name}: its own header cannot be read, so nothing "
                    f"shows it is of program {program}")
        if not same_value("PROGRAM", program, header.get("PROGRAM")):
            return (f"{exptype} member {name} is of program {header.get('PROGRAM')!r:.20} by "
                    f"its own header, the order of program {program}: a companion is of "
                    "the science's program")
        if instrument is not None and header.get("INSTRUME") != instrument:
            return (f"{exptype} member {name} is of instrument {header.get('INSTRUME')!r:.20} "
                    f"by its own header, the science of {instrument!r:.20}")
        if exptype in SAME_OBSERVATION and observation is not None \
                and not same_value("OBSERVTN", observation, header.get("OBSERVTN")):
            return (f"{exptype} member {name} is of observation "
                    f"{header.get('OBSERVTN')!r:.20} by its own header, the science of "
                    f"{observation!r:.20}")
    return _direct_image_problem(listed)


def _direct_image_problem(listed: list[tuple[str, str]]) -> str | None:
    """The i2d, catalog and segmentation map are one product's files, side by
    side, as the planner takes them (validation has them all or none)."""
    trio = {exptype: PurePath(path) for path, exptype in listed
            if exptype in _DIRECT_IMAGE_FILES}
    if not trio:
        return None
    if len(trio) != len(_DIRECT_IMAGE_FILES) or len([t for _, t in listed if t in trio]) != 3:
        return "a direct image needs one i2d, one catalog and one segmentation map"
    made = {(path.parent, *path.name.split(".", 1)[0].rsplit("_", 1))
            for path in trio.values()}
    wanted = {(p.parent, p.name.split(".", 1)[0].rsplit("_", 1)[0], _DIRECT_IMAGE_FILES[t])
              for t, p in trio.items()}
    if made != wanted or len({(d, base) for d, base, _ in made}) != 1:
        return ("the direct_image, sourcecat and segmap members are not one level-3 "
                "product's i2d, cat and segm files side by side: "
                + ", ".join(shown_path(p.name) for p in trio.values()))
    return None
