"""A stage-2 order's copy of its exposure's header: the file's own decides (pure).

The planner copies the header of an exposure's detector1 product event into
its stage-2 order, and the stage copies the order's into the product event
it publishes; the planner's stage-3 decisions read that (the level-3
candidate an exposure joins: filter, pupil, target, ...; completeness: the
visit's counts). The order is a message, so it says what its science file
is only as an arrival does: the detector1 stage compares an arrival's copy
with the uncal file's own header (admission.arrival_claims_problem), and
the stage-2 stage compares an order's with its science member's own primary
header (its rate or rateints file, which jwst writes with the uncal file's
keywords) and then carries the file's. Before, a forged order whose copy
said another FILTER (or EXP_TYPE, or NEXPOSUR) ran, and its product event
put the exposure into another mosaic.
"""

from __future__ import annotations

from typing import Any

from calstream.daemon.deciders.admission import Verdict
from calstream.steps.exposure_keywords import REQUIRED_KEYWORDS

# The ids an exposure's name fixes (PROGRAM ... EXPOSURE): the copy has them
# as the name writes them (the door makes an id written as a number the
# name's text), while jwst writes the uncal file's own value into the rate
# file: EXPOSURE = 1 in the uncal file is '1' there, '00001' in the copy.
NAME_KEYWORDS = frozenset(REQUIRED_KEYWORDS[:7])


def science_member(order: dict[str, Any]) -> str | None:
    """The path of a stage-2 order's science member (admission has checked
    that its association has exactly one, among the order's inputs)."""
    for product in order["association"]["products"]:
        for member in product["members"]:
            if member["exptype"] == "science":
                return member["expname"]
    return None


def header_copy_problem(order: dict[str, Any], own: dict[str, Any] | None) -> Verdict | None:
    """``own``: the exposure keywords of the science member's own primary
    header (None: not readable as FITS; the run judges such a file).

    Every keyword the copy has must be the file's, and so must the order's
    ``exp_type`` and ``instrument`` (they pick the configured step parameters
    and go into the product event); a copy may leave keywords out, since the
    file's own header is what the run carries on."""
    if own is None:
        return None
    copy = order.get("header")
    if not isinstance(copy, dict):
        return refused("the order carries no header copy of its exposure", order)
    wrong = [f"{k}: order {v!r:.80}, file {own.get(k)!r:.80}"
             for k, v in sorted(copy.items()) if not same_value(k, v, own.get(k))]
    wrong += [f"{field}: order {order[field]!r:.80}, file {keyword} = {own.get(keyword)!r:.80}"
              for field, keyword in (("exp_type", "EXP_TYPE"), ("instrument", "INSTRUME"))
              if order.get(field) is not None and order[field] != own.get(keyword)]
    if not wrong:
        return None
    return refused("the order's header copy is not its science file's own: "
                    + "; ".join(wrong[:5])
                    + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""), order)


def carried_header(order: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The header the run's product event carries: the file's own, with the
    ids its name fixes as the copy writes them (the name's text), which the
    planner holds an exposure's header to (event_checks)."""
    copy = order.get("header") or {}
    return {**own, **{k: copy[k] for k in NAME_KEYWORDS if k in copy}}


def same_value(keyword: str, copied: Any, own: Any) -> bool:
    """Whether a copy's value of ``keyword`` is the file's: equal, or an id
    the name fixes written as a number on one side and as text on the other."""
    if copied == own:
        return True
    if keyword not in NAME_KEYWORDS:
        return False
    number = _id_number(copied)
    return number is not None and number == _id_number(own)


def _id_number(value: Any) -> int | None:
    """An id written as digits or as a whole number, as a number."""
    if type(value) is int:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    return None


def refused(reason: str, order: dict[str, Any]) -> Verdict:
    # invalid_message, as an arrival's copy that is not its file's: the
    # message lies about the file, which is as it should be.
    return Verdict("dead_letter", reason, "invalid_message",
                   {"exposure_id": order.get("exposure_id")})
