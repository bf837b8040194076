"""Level-3 associations in jwst's JSON format: candidates, names, the file.

Which exposures a stage-3 run combines follows jwst's level-3 rules
(jwst/associations/lib/rules_level3.py, rules_level3_base.py), with header
keywords standing in for the pool columns:

* a candidate is one program, instrument, optical path, target, EXP_TYPE,
  candidate id (acid) and TSO-or-not (``candidate_key``). The optical path is
  jwst's Constraint_Optical_Path -- FILTER, PUPIL (else GRATING), FXD_SLIT,
  SUBARRAY -- except where a rule narrows it: NIRSpec IFU (GRATING only), MIRI
  MRS (nothing: all channels, bands and both detectors combine), WFSS (the
  grism and its blocking filter, any subarray). Detectors are not part of it:
  the four short-wave NIRCam detectors, or NRS1 and NRS2, make one product.
  WFS&C pairs (wfs-image3) are per detector and activity, as Asn_Lv3WFSCMB.
* Segments of an exposure (``-segNNN``) share its key: tso3 combines them.
* Without a plan the acid is the observation (``oNNN``), as jwst's
  observation candidates. APT candidates (``c1NNN``: PSF references and
  dedicated backgrounds in other observations, mosaics across observations)
  are not in any header: the planner passes ``acid`` from a plan, and then
  the plan decides membership (the key drops the target, as jwst does not
  constrain a PSF's or background's target, and takes it from the science).
* Member types are jwst's (dms_base.get_exposure_type): science, psf
  (IS_PSF), background (BKGDTARG). A dedicated background in its own
  observation candidate makes its own association whose members are all
  "science" (jwst's *Background/SpecAux rules, AsnMixin_AuxData). Imprints
  (IS_IMPRT) never enter level 3 (AsnMixin_Science's is_imprt constraint).
* Member products are the stage-2 products: cal, or calints where stage 2
  ran on rateints (TSO, coronagraphy, AMI); a spectroscopic background
  member is its x1d (Utility.rename_to_level2). MIRI LRS nods also list
  each nod's x1d as a background, as Asn_Lv3SpectralTarget.finalize does.

Product names are jwst's ``DMS_Level3_Base._dms_product_name`` and its
per-rule variants; see ``level3_candidates.product_name``. The candidate
keys and names are in `level3_candidates`, the checks in `validation`; this
module builds the association.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calstream.steps.associations.filenames import version_stamp
from calstream.steps.associations.level2 import DEGRADED_STATUS_OK
from calstream.steps.associations.level3_candidates import (
    ASN_TYPES,
    LEVEL3_ASN_TYPES,
    Level3Error,
    Level3Key,
    candidate_key,
    product_name,
    target_id,
)
from calstream.steps.associations.records import Exposure
from calstream.steps.provenance import jwst_version
from calstream.steps.routing import BACKGROUND, Route

__all__ = [
    "ASN_TYPES", "LEVEL3_ASN_TYPES", "Level3Error", "Level3Key", "build_level3",
    "candidate_key", "describe_key", "member_type", "one_candidate", "pass_into", "product_name",
]  # fmt: skip

_STAGE2_SUFFIX = {"rate": "cal", "rateints": "calints"}


def member_type(key: Level3Key, route: Route) -> str:
    """The member's exptype in the association of ``key``."""
    if key.aux:
        return "science"  # AsnMixin_AuxData
    return route.role


def _member_suffix(route: Route, exptype: str) -> str:
    suffix = _STAGE2_SUFFIX.get(route.stage2_input or "", "cal")
    if exptype == BACKGROUND:
        return "x1dints" if suffix == "calints" else "x1d"
    return suffix


def build_level3(
    route: Route,
    members: list[Exposure],
    *,
    degraded: str | None = None,
    acid: str | None = None,
    asn_dir: str | Path | None = None,
    asn_pool: str | None = None,
    version_id: str | None = None,
    pool: list[Exposure] | None = None,
) -> dict[str, Any]:
    """The level-3 association of ``members``, one candidate, along ``route``.

    ``members`` must share one ``candidate_key`` (segments included). Each
    must have its stage-2 product in ``products`` (cal, calints; x1d for a
    spectroscopic background). ``degraded``: why the candidate closed
    incomplete (e.g. "exposure 00003 of 4 never arrived"), written to
    ``degraded_status``. ``acid``: a plan's candidate. ``version_id``
    defaults to the earliest member's start, so a rebuild names the same
    file; the planner passes another stamp for a superseding version.
    ``pool``: the program's exposures, which number targets by TARGNAME
    where no header or plan gives TARGETID (as asn_make_pool on those
    files); default the members.
    """
    if not members:
        raise Level3Error("a level-3 association needs members")
    members = sorted(members, key=lambda e: e.exposure_id)
    keys = {}
    for e in members:
        own = pass_into(route.stage3, route.mode.endswith("_as_image"), e)
        keys[e.exposure_id] = (candidate_key(own, e, acid=acid), own)
    distinct = {k for k, _ in keys.values()}
    key = one_candidate(distinct)
    if not any(member_type(key, r) == "science" for _, r in keys.values()):
        raise Level3Error(f"{key.asn_type} candidate has no science member")
    if key.asn_type in ("coron3", "ami3") and not any(r.role == "psf" for _, r in keys.values()):
        raise Level3Error(
            f"{key.asn_type} needs PSF reference (IS_PSF) members, as jwst's {key.asn_rule}; "
            "they are usually another observation: load a plan with the c-candidate"
        )
    base = Path(asn_dir).resolve() if asn_dir is not None else None

    def name(path: str) -> str:
        if base is not None and Path(path).is_absolute() and Path(path).is_relative_to(base):
            return str(Path(path).relative_to(base))
        return str(path)

    entries = []
    for e in members:
        _, own = keys[e.exposure_id]
        exptype = member_type(key, own)
        suffix = _member_suffix(own, exptype)
        if suffix not in e.products:
            raise Level3Error(
                f"{e.exposure_id}: no {suffix} product yet (have: "
                f"{', '.join(sorted(e.products)) or 'none'})"
            )
        entries.append({"expname": name(e.products[suffix]), "exptype": exptype})
    order = {"science": 0, "psf": 1, BACKGROUND: 2}
    entries.sort(key=lambda m: order.get(m["exptype"], 3))
    if key.asn_rule == "Asn_Lv3SpectralTarget" and _nodded(members, keys):
        # make_fixedslit_bkg: each nod's x1d is a background of the others.
        for e in members:
            if keys[e.exposure_id][1].role != "science":
                continue
            if "x1d" not in e.products:
                raise Level3Error(f"{e.exposure_id}: no x1d product yet (nod background)")
            entries.append({"expname": name(e.products["x1d"]), "exptype": BACKGROUND})

    stamp = version_id or min(version_stamp(e.header) for e in members)
    status = DEGRADED_STATUS_OK
    if degraded:
        status = degraded if degraded.startswith("Degraded") else f"Degraded: {degraded}"
    target = target_id(key, members, pool or ())
    return {
        "asn_type": key.asn_type,
        "asn_rule": key.asn_rule,
        "asn_id": key.acid,
        "asn_pool": asn_pool or f"jw{key.program}_{stamp}_pool.csv",
        "program": key.program,
        "target": target or "none",
        "version_id": stamp,
        "code_version": jwst_version(),
        "degraded_status": status,
        "constraints": _constraints(key),
        "products": [{"name": product_name(key, members, pool or ()), "members": entries}],
    }


def _nodded(members: list[Exposure], keys: Mapping[str, tuple[Level3Key, Route]]) -> bool:
    science = [e for e in members if keys[e.exposure_id][1].role == "science"]
    return len(science) >= 2 and all("NOD" in e.keywords.text("PATTTYPE") for e in science)


def pass_into(stage3: str | None, as_image: bool, exposure: Exposure) -> Route:
    """The member's own pass into the ``stage3`` pipeline (``as_image``: the
    imaging pass of full-frame coronagraphy): its role and product come from
    its own header (a PSF reference, a background)."""
    r = exposure.route
    for p in r.passes if r else ():
        if p.stage3 == stage3 and p.mode.endswith("_as_image") == as_image:
            return p
    for p in r.passes if r else ():
        if p.stage3 == stage3:
            return p
    raise Level3Error(
        f"{exposure.exposure_id}: its route ({r.mode if r else 'unroutable'}) does not feed "
        f"{stage3}"
    )


def one_candidate(keys: set[Level3Key]) -> Level3Key:
    """The one key of a candidate; PSF and background members may differ only
    where jwst leaves them unconstrained (target, aux rule) -- none here."""
    if len(keys) == 1:
        return next(iter(keys))
    science = {k for k in keys if not k.aux}
    if len(science) == 1:
        return next(iter(science))
    detail = "; ".join(sorted(describe_key(k) for k in keys))
    raise Level3Error(f"members belong to {len(keys)} different level-3 candidates: {detail}")


def describe_key(key: Level3Key) -> str:
    optics = " ".join(f"{k}={v}" for k, v in key.optics if v)
    return (f"{key.asn_type} {key.asn_rule} program={key.program} acid={key.acid} "
            f"exp_type={key.exp_type} target={key.target or key.target_name} tso={key.tso} "
            f"{optics}").rstrip()


def _constraints(key: Level3Key) -> str:
    extra = " ".join(f"{k}={v}" for k, v in key.extra)
    return f"calstream {describe_key(key)} {extra}".rstrip()
