"""WFSS grism exposures held until their direct image's stage-3 product exists (pure).

jwst's calwebb_spec2 cannot calibrate a WFSS exposure without the direct
image's source catalog and segmentation map: extract_2d cuts one spectrum per
catalogued source. An order without them is one jwst refuses (a dead letter),
so where another companion that never comes stops blocking after
``companion_wait`` (a degraded order), a grism whose direct image has not come
by then is *held* instead: a hold record on the holds topic saying why
(``waiting_for: direct_image``), shown by `calstream status` and the console
like a pointing hold. When the direct image's i2d, cat and segm exist the hold
is released and the grism is ordered, once.

The record is the pointing hold's (topics/schemas/hold.schema.json), with one
optional field, ``waiting_for``, telling the two apart; a grism whose
pointing hold was released keeps that release in ``pointing_release`` (the
record replaces the pointing one on the compacted topic, and a restarted
planner must still know the grism's pointing was corrected). Its release has no
``release`` object (``release: null``): that object's ``path`` names the three
ways a *pointing* hold ends, and a 1.x reader that knows only those must go
on reading the topic; ``reason`` says what released it.

Only the live namespace publishes these records: the holds map is shared by
every namespace (a pointing hold is on content), while a direct image is a
namespace's own product. A replay's grism waits all the same (no degraded
order), only without a record.
"""

from __future__ import annotations

from typing import Any

from calstream.daemon.deciders.holds import Holds, hold_record
from calstream.daemon.deciders.planner_records import Emit, Seen
from calstream.steps.routing import DIRECT_IMAGE
from calstream.topics import contract

_ENVELOPE = ("schema", "schema_version", "event_id", "emitted_at", "producer")


def is_direct_image_hold(record: dict[str, Any] | None) -> bool:
    """Whether a hold record is a WFSS grism's wait for its direct image."""
    return bool(record) and record.get("waiting_for") == DIRECT_IMAGE


def hold_for_direct_image(seen: Seen, missing: dict[str, str], companion_wait: float,
                          holds: Holds, now: float, *, live: bool) -> list[Emit] | None:
    """The hold for ``seen`` (a grism) if its direct image is among the
    ``missing`` companions after ``companion_wait``; [] if it is already
    held (or not live); None if the direct image is not what is missing."""
    if DIRECT_IMAGE not in missing:
        return None
    exposure_id = seen.exposure.exposure_id
    current = holds.get(exposure_id)
    if not live or (is_direct_image_hold(current) and current["state"] == "held"
                    and current["digest"] == seen.digest):
        return []
    body = dict(exposure_id=exposure_id, program=seen.exposure.name.program, state="held",
                since=contract.iso(now), digest=seen.digest, waiting_for=DIRECT_IMAGE,
                release=None,
                reason=f"WFSS: {missing[DIRECT_IMAGE]} not there after {companion_wait:.0f} s; "
                       "calwebb_spec2 cannot run without the direct image's source catalog "
                       "and segmentation map, so the grism is held until they exist")
    if seen.release:  # this record replaces the pointing one: keep its release
        body["pointing_release"] = seen.release
    return [hold_record(exposure_id, body, seen.digest, holds)]


def release_direct_image_hold(seen: Seen, association: dict[str, Any], holds: Holds, *,
                              live: bool) -> list[Emit]:
    """The release of ``seen``'s direct-image hold, now that ``association``
    (complete) names the direct image; [] if it is not so held."""
    exposure_id = seen.exposure.exposure_id
    current = holds.get(exposure_id)
    # The members are looked at only for a held grism (every order asks).
    if not live or not is_direct_image_hold(current) or current["state"] != "held":
        return []
    direct = next((m["expname"] for p in association["products"] for m in p["members"]
                   if m["exptype"] == DIRECT_IMAGE), None)
    if direct is None:
        return []
    body = {k: v for k, v in current.items() if k not in _ENVELOPE}
    body.update(state="released", release=None, direct_image=direct,
                reason=f"{current['reason']}. Released: the direct image {direct} and its "
                       "catalog and segmentation map exist; the grism is ordered")
    return [hold_record(exposure_id, body, seen.digest, holds)]


def pointing_release_of(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pointing release a hold record keeps: a released pointing hold's
    ``release``, or the ``pointing_release`` a direct-image hold carries."""
    if not record:
        return None
    if is_direct_image_hold(record):
        return record.get("pointing_release")
    return record.get("release") if record["state"] == "released" else None


def held_by_kind(holds: Holds) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The current holds: (pointing holds, WFSS grisms waiting for their direct image).
    Read each second (planner_summary.py), so the kind is read in place, as
    ``is_direct_image_hold`` reads it (a held record is never empty): a call
    a hold was most of the status's cost at thousands held."""
    held = [h for h in holds.values() if h["state"] == "held"]
    pointing = [h for h in held if h.get("waiting_for") != DIRECT_IMAGE]
    if len(pointing) == len(held):  # no grism held: no second pass
        return pointing, []
    return pointing, [h for h in held if h.get("waiting_for") == DIRECT_IMAGE]
