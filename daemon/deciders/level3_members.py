"""A stage-3 order's members, judged by their own files' headers (pure).

The planner groups calibrated exposures into level-3 candidates by the
headers their stage-2 product events carry (steps/associations/
level3_candidates.py, ``candidate_key``: program, acid, instrument,
EXP_TYPE, time series or not, the optical path as each jwst rule narrows
it -- FILTER, PUPIL or GRATING, FXD_SLIT, SUBARRAY --, the target, and each
member's role), and its stage-3 order lists the members' cal files. Both
are messages: a forged stage-2 product event saying another FILTER put its
exposure into another mosaic, and a forged stage-3 order could name any
cal files of its program; the run then combined exposures that do not
belong together into a product operators trust. So the stage-3 consumer
holds an order to its members' own primary headers (jwst writes a cal file
with its exposure's keywords): they must make one candidate, the one the
association says it is (asn_type, asn_rule, asn_id, program, product
name), each member in the role it is listed with; and the order's header
copy (which its product event carries: the planner matches a WFSS grism to
its direct image by it) must put its science exposure in that candidate.

Compared: what ``candidate_key`` and routing read, through them, so the
rule is the planner's own. Not compared: ENGQLPTG (a corrected exposure's
cal file says CALCULATED where its event said PLANNED), counts, the ids the
name fixes (compared as numbers where the copy is matched to its file), and
the target of an order a plan made (a plan's TARGETID is in no file; the
plan decides its candidates' membership, as a jwst pool does). An
unreadable member is left to the run, as a stage-2 order's science file is.

The planner holds a stage-2 product event to the same rule where it can at
no cost (``stage2_event_problem``): its header must put the exposure in the
candidates its detector1 event's header did (the door compared that one
with the uncal file; stage 2 runs on a rate file jwst wrote with its
keywords). An event without its exposure's detector1 event (a namespace
replayed from stage 2, an event ahead of its arrival) is taken as before:
the stage-3 consumer's check still judges the order it leads to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from calstream.daemon.deciders.admission import Verdict
from calstream.daemon.deciders.level3_candidates import keys_of
from calstream.daemon.deciders.order_header import NAME_KEYWORDS, refused, same_value
from calstream.steps.associations import AssociationError, Exposure, Level3Key, candidate_key
from calstream.steps.associations.level3 import (
    member_type,
    one_candidate,
    pass_into,
    product_name,
)
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.steps.routing import BACKGROUND

# The member types build_level3 gives; any other is no order of the planner's.
_ROLES = ("science", "psf", BACKGROUND)
# The ids that make a header copy one exposure's (segments share their keys).
_IDENTITY = (*sorted(NAME_KEYWORDS), "DETECTOR")
_CORON_IMAGE_RULE = "Asn_Lv3NRCCoronImage"  # the imaging pass of full-frame coronagraphy
# Asn_Lv3SpectralTarget.finalize: each nod's x1d is a background of the others.
_NOD_BACKGROUND_RULE = "Asn_Lv3SpectralTarget"


def member_paths(order: Mapping[str, Any]) -> list[str]:
    """The files the order's association lists, each once (admission has
    checked they are the order's inputs)."""
    return list(dict.fromkeys(m["expname"] for p in order["association"]["products"]
                              for m in p["members"]))


def members_problem(order: Mapping[str, Any],
                    own: Mapping[str, dict[str, Any] | None]) -> Verdict | None:
    """``own``: each member path's exposure keywords, read from its own
    primary header (None: not readable as FITS; the run judges it)."""
    try:
        problem = _problem(order, own)
    except (AssociationError, BadName) as exc:  # Level3Error: no candidate at all
        problem = f"its members are no level-3 candidate by their own headers: {exc}"
    return None if problem is None else refused(problem[:1000], dict(order))


def _problem(order: Mapping[str, Any], own: Mapping[str, dict[str, Any] | None]) -> str | None:
    asn = order["association"]
    entries = [(m["expname"], m["exptype"]) for p in asn["products"] for m in p["members"]]
    strange = sorted({str(t) for _, t in entries} - set(_ROLES))
    if strange:
        return f"member type(s) {', '.join(strange)[:200]} no stage-3 order of the planner has"
    acid = None if asn["asn_id"].startswith("o") else asn["asn_id"]  # oNNN: each its own
    as_image = asn["asn_rule"] == _CORON_IMAGE_RULE
    judged: dict[str, tuple[Exposure, Any, Level3Key]] = {}  # path -> (exposure, pass, key)
    for path in member_paths(order):
        header = own.get(path)
        if header is not None:
            exposure = Exposure(parse_exposure_name(path).exposure_id, header)
            its_pass = pass_into(order["pipeline"], as_image, exposure)
            judged[path] = (exposure, its_pass, candidate_key(its_pass, exposure, acid=acid))
    if not judged:
        return None
    planned = order.get("expected_by") == "plan"
    key = one_candidate({_untargeted(k) if planned else k for _, _, k in judged.values()})
    wrong = [f"{field} {asn[field]!r}, its members' headers make {made!r}"
             for field, made in (("asn_type", key.asn_type), ("asn_rule", key.asn_rule),
                                 ("asn_id", key.acid), ("program", key.program))
             if asn[field] != made]
    if wrong:
        return "the association is not its members' candidate: " + "; ".join(wrong)
    for path, exptype in entries:
        if path in judged and exptype != (role := member_type(key, judged[path][1])) \
                and not _nod_background(key, role, exptype, path):
            return f"member {PurePath(path).name!r} is listed as {exptype}, its own header " \
                   f"makes it {role}"
    # The target is the pool's number where no file has a TARGETID (the
    # planner's, over its program): the association's says it then.
    target = None if key.target else ("" if asn.get("target") == "none" else asn.get("target"))
    name = product_name(key, [e for e, _, _ in judged.values()], target=target)
    if asn["products"][0]["name"] != name:
        return (f"product {asn['products'][0]['name']!r}, but its members' headers name "
                f"their candidate {name!r}")
    return _copy_problem(order, own, entries, judged, acid, as_image)


def _copy_problem(order, own, entries, judged, acid, as_image) -> str | None:
    """The order's header copy: one of its science members', in that candidate."""
    copy = order.get("header")
    if not isinstance(copy, dict):
        return None  # nothing a product event would carry
    science = [path for path, exptype in entries if exptype == "science"]
    match = next((path for path in science if own.get(path) is not None
                  and all(same_value(k, copy.get(k), own[path].get(k)) for k in _IDENTITY)), None)
    if match is None:
        if any(own.get(path) is None for path in science):
            return None  # perhaps the unreadable one's: the run judges it
        return ("the order's header copy is of none of its science members ("
                + ", ".join(f"{k} {copy.get(k)!r:.20}" for k in _IDENTITY) + ")")
    exposure, its_pass, made = judged[match]
    file_header = own[match]
    wrong = [f"{field}: order {order[field]!r:.80}, file {keyword} = {file_header.get(keyword)!r:.80}"
             for field, keyword in (("exp_type", "EXP_TYPE"), ("instrument", "INSTRUME"))
             if order.get(field) is not None and order[field] != file_header.get(keyword)]
    copied = Exposure(exposure.exposure_id, copy)
    try:
        said = candidate_key(pass_into(order["pipeline"], as_image, copied), copied, acid=acid)
    except AssociationError as exc:
        wrong.append(f"it makes no candidate: {exc}")
    else:
        wrong += key_differences(said, made)
    if not wrong:
        return None
    return (f"the order's header copy puts its science exposure {exposure.exposure_id} in "
            "another level-3 candidate than its file does: " + "; ".join(wrong[:5]))


def stage2_event_problem(event: Mapping[str, Any], exposures: Mapping[str, Any]) -> str | None:
    """Why a stage-2 product event's header cannot be its exposure's (None:
    it can, or there is nothing to hold it to). ``exposures``: the planner's
    detector1 records by exposure id (planner_records.Seen)."""
    seen = exposures.get(event.get("exposure_id"))
    if event.get("stage") != "stage2" or event.get("outcome") != "success" or seen is None:
        return None
    arrived = seen.exposure
    if event["header"] is arrived.header or event["header"] == arrived.header:
        # The usual case (the rate file's header copy is the uncal file's):
        # a dict comparison instead of two keys_of, which were 28 % of a
        # redelivered event's decision (bench_planner.py, session 35). Since
        # session 44 an identical copy is the same dict (event_checks.
        # share_clean_header), and ``==`` would still compare every keyword.
        return None
    said = [k for k, _ in keys_of(Exposure(arrived.exposure_id, event["header"]))]
    made = [k for k, _ in keys_of(arrived)]
    if said == made:
        return None
    wrong = [d for a, b in zip(said, made, strict=False)
             for d in key_differences(a, b, ("stage-2 event", "detector1 event"))]
    return (f"the stage-2 product event of {arrived.exposure_id} puts it in other level-3 "
            f"candidates than its detector1 event did: "
            + ("; ".join(wrong[:5]) or f"{len(said)} candidate(s), not {len(made)}"))


def key_differences(said: Level3Key, made: Level3Key,
                    labels: tuple[str, str] = ("copy", "file")) -> list[str]:
    """Where two candidate keys differ, in jwst's constraint names."""
    x, y = labels
    out = []
    for f in dataclasses.fields(Level3Key):
        a, b = getattr(said, f.name), getattr(made, f.name)
        if f.name in ("optics", "extra"):
            a, b = dict(a), dict(b)
            out += [f"{k}: {x} {a.get(k)!r:.80}, {y} {b.get(k)!r:.80}"
                    for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{f.name}: {x} {a!r:.80}, {y} {b!r:.80}")
    return out


def _untargeted(key: Level3Key) -> Level3Key:
    return dataclasses.replace(key, target=None, target_name="")


def _nod_background(key: Level3Key, role: str, exptype: str, path: str) -> bool:
    """A nodded science exposure's x1d, listed as the others' background."""
    suffix = PurePath(path).name.split(".", 1)[0].rsplit("_", 1)[-1]
    return (key.asn_rule == _NOD_BACKGROUND_RULE and role == "science"
            and exptype == BACKGROUND and suffix in ("x1d", "x1dints"))
