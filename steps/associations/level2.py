"""Level-2b associations in jwst's JSON format, one science exposure each.

The shape is what jwst's level-2b rules write (DMSLevel2bBase): one product
named after the science member's file without its suffix, the science member
first, then its companions. Member names are the product paths the records
give, written relative to the association's directory when they lie under
it (jwst resolves relative names from there and warns about paths).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

from calstream.steps.associations.filenames import NamingError, acid_for, version_stamp
from calstream.steps.associations.matching import Companions, gather_companions, member_suffix
from calstream.steps.associations.records import Exposure, Level3Product
from calstream.steps.keyword_memo import ByKeywordsRead
from calstream.steps.provenance import jwst_version
from calstream.steps.routing import HeaderView, Route

# jwst dms_base._DEGRADED_STATUS_OK: the value every complete association carries.
DEGRADED_STATUS_OK = "No known degraded exposures in association."
# jwst flags degraded members (exposerr) with a sentence; a companion that never
# came has no member to flag, so the sentence names what is missing instead.
DEGRADED_PREFIX = "Degraded: built without "


class AssociationError(ValueError):
    """An association that cannot be built; the message says why."""


class MissingCompanions(AssociationError):
    def __init__(self, exposure_id: str, missing: dict[str, str]):
        self.missing = dict(missing)
        super().__init__(
            f"{exposure_id}: still waiting for " + "; ".join(f"{k} ({v})" for k, v in missing.items())
        )


def build_level2(
    science_route: Route,
    science: Exposure,
    seen: Iterable[Exposure | Level3Product] = (),
    *,
    visit_complete: bool = False,
    expected: Iterable[str] = (),
    allow_degraded: bool = False,
    asn_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The level-2b association of ``science`` with the companions among ``seen``.

    ``asn_dir``: where the association file will be written; members under
    it are named relative to it.

    Raises MissingCompanions while companions are awaited, unless
    ``allow_degraded`` (the planner's wait is over): then the association is
    built without them and ``degraded_status`` says what it lacks.
    """
    if science_route.stage2 is None:
        raise AssociationError(
            f"{science.exposure_id}: {science_route.mode} has no stage 2 "
            f"({science_route.other or 'nothing'})"
        )
    suffix = science_route.stage2_input
    if suffix not in science.products:
        raise AssociationError(
            f"{science.exposure_id}: no {suffix} product yet (have: "
            f"{', '.join(sorted(science.products)) or 'none'})"
        )
    found = gather_companions(
        science_route, science, list(seen), visit_complete=visit_complete, expected=expected
    )
    if found.missing and not allow_degraded:
        raise MissingCompanions(science.exposure_id, dict(found.missing))

    degraded = DEGRADED_STATUS_OK
    if found.missing:
        degraded = DEGRADED_PREFIX + "; ".join(f"{k} ({v})" for k, v in found.missing.items())
    stamp = version_stamp(science.header)
    program = science.name.program
    acid, target, constraints = _HEADS(science.header, science_route, program,
                                       science.name.observation)
    return {
        "asn_type": science_route.asn_type,
        "asn_rule": science_route.asn_rule,
        "asn_id": acid,
        "asn_pool": f"jw{program}_{stamp}_pool.csv",
        "program": program,
        "target": target,
        "version_id": stamp,
        "code_version": jwst_version(),
        "degraded_status": degraded,
        "constraints": constraints,
        "products": [
            {"name": science.exposure_id, "members": _members(science, suffix, found, asn_dir)}
        ],
    }


def _members(
    science: Exposure, suffix: str, found: Companions, asn_dir: str | Path | None
) -> list[dict[str, str]]:
    base = Path(asn_dir).resolve() if asn_dir is not None else None

    def name(path: str) -> str:
        if base is not None and Path(path).is_absolute() and Path(path).is_relative_to(base):
            return str(Path(path).relative_to(base))
        return str(path)

    def member(e: Exposure, exptype: str) -> dict[str, str]:
        return {"expname": name(e.products[member_suffix(e)]), "exptype": exptype}

    members = [{"expname": name(science.products[suffix]), "exptype": "science"}]
    if found.nods or found.backgrounds or found.imprints:  # most associations have none
        members += [member(e, "background") for e in found.nods]
        members += [member(e, "background") for e in found.backgrounds]
        members += [member(e, "imprint") for e in found.imprints]
    if found.target_acquisition is not None:
        members.append(member(found.target_acquisition, "target_acquisition"))
    if found.direct_image is not None:
        products = found.direct_image.products
        members += [
            {"expname": name(products["i2d"]), "exptype": "direct_image"},
            {"expname": name(products["cat"]), "exptype": "sourcecat"},
            {"expname": name(products["segm"]), "exptype": "segmap"},
        ]
    return members


def _head(header: Mapping[str, Any], science_route: Route, program: str,
          observation: str) -> tuple[str, str, str]:
    """(asn_id, target, constraints): what a visit's associations share."""
    h = HeaderView(header)
    optics = " ".join(
        f"{k}={h.text(k)}" for k in ("FILTER", "PUPIL", "GRATING", "FXD_SLIT", "SUBARRAY")
        if h.has(k)
    )
    constraints = (
        f"calstream {science_route.asn_rule} ({science_route.mode}): program="
        f"{program} observation={observation} "
        f"instrument={science_route.instrument} detector={h.text('DETECTOR')} "
        f"exp_type={science_route.exp_type} {optics}".rstrip()
    )
    return acid_for(header), h.text("TARGETID") or "none", constraints


# The exposures of a visit (a detector's) share these: remembered by the
# keywords read, as routing is (steps/keyword_memo.py); the version stamp and
# the members are each exposure's own.
_HEADS: ByKeywordsRead[tuple[str, str, str]] = ByKeywordsRead(
    _head, first="EXP_TYPE", passes=(NamingError,))


def product_name(member_path: str) -> str:
    """What jwst's dms_product_name makes of a science member: the file name
    without directory, extension or suffix."""
    stem = PurePath(member_path).name.split(".", 1)[0]
    return stem.rsplit("_", 1)[0]
