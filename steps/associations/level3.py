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
per-rule variants; see ``product_name``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from calstream.steps.associations.filenames import version_stamp
from calstream.steps.associations.level2 import DEGRADED_STATUS_OK, AssociationError
from calstream.steps.associations.records import Exposure, program_of
from calstream.steps.associations.validation import (
    AssociationInvalid,
    check_jwst_schema,
    jwst_schema,
    member_problems,
)
from calstream.steps.provenance import jwst_version
from calstream.steps.routing import (
    AMI3,
    BACKGROUND,
    CORON3,
    IMAGE3,
    SPEC3,
    TSO3,
    WFS_IMAGE3,
    HeaderView,
    Route,
)

# asn_type per stage-3 pipeline (the asn_type jwst's rule writes).
ASN_TYPES: dict[str, str] = {
    IMAGE3: "image3",
    SPEC3: "spec3",
    TSO3: "tso3",
    CORON3: "coron3",
    AMI3: "ami3",
    WFS_IMAGE3: "wfs-image3",
}
LEVEL3_ASN_TYPES = frozenset(ASN_TYPES.values())
MEMBER_TYPES = frozenset({
    "science", "background", "psf", "imprint", "sourcecat", "segmap", "direct_image",
    "target_acquisition",
})
# rules_level3_base.py _REGEX_ACID_VALUE
_ACID = re.compile(r"o\d{3}|(c|a)\d{4}")
_STAMP = re.compile(r"\d{8}t\d{6}")
# dms_base._EMPTY: values jwst treats as "keyword not given".
_EMPTY = frozenset({"", "NULL", "--", "N", "F", "FALSE", "N/A", "NONE"})
# The two primary S200A slits combine (Constraint_Optical_Path's fxd_slit2).
_S200A = frozenset({"S200A1", "S200A2"})
_STAGE2_SUFFIX = {"rate": "cal", "rateints": "calints"}
_SPECTRAL_BACKGROUND_RULES = frozenset({
    "Asn_Lv3NRSFSS", "Asn_Lv3NRSIFU", "Asn_Lv3MIRMRS", "Asn_Lv3SpectralTarget",
    "Asn_Lv3SpectralSource", "Asn_Lv3SlitlessSpectral",
})


class Level3Error(AssociationError):
    """An exposure or member list that makes no level-3 association; says why."""


@dataclass(frozen=True)
class Level3Key:
    """What makes exposures one level-3 candidate (and so one association).

    ``optics`` are (name, value) pairs in jwst's constraint names: opt_elem,
    opt_elem2, fxd_slit, subarray (the ones the rule uses, upper case).
    ``target`` is None where a plan defines membership or jwst does not
    constrain it (PSF references); names then take the science's TARGETID.
    ``extra`` holds rule-specific constraints (WFS&C: detector, activity).
    """

    program: str
    acid: str
    instrument: str
    asn_type: str
    asn_rule: str
    exp_type: str
    tso: bool
    optics: tuple[tuple[str, str], ...]
    target: str | None
    aux: bool = False  # a dedicated background's own association
    extra: tuple[tuple[str, str], ...] = ()

    def optic(self, name: str) -> str:
        return dict(self.optics).get(name, "")


def _value(h: HeaderView, key: str) -> str:
    text = h.text(key)
    return "" if text in _EMPTY else text


def _first(h: HeaderView, *keys: str) -> str:
    # utilities.getattr_from_list: the first source with a valid value.
    for key in keys:
        if _value(h, key):
            return _value(h, key)
    return ""


def _asn_rule(route: Route, aux: bool) -> str:
    """The jwst level-3 rule that makes this route's association."""
    exp_type, stage3 = route.exp_type, route.stage3
    if stage3 == TSO3:
        return "Asn_Lv3TSO"
    if stage3 == WFS_IMAGE3:
        return "Asn_Lv3WFSCMB"
    if stage3 == AMI3:
        return "Asn_Lv3AMI"
    if stage3 == CORON3:
        return "Asn_Lv3NRCCoron" if exp_type == "NRC_CORON" else "Asn_Lv3MIRCoron"
    if stage3 == IMAGE3:
        if exp_type == "NRC_CORON":
            return "Asn_Lv3NRCCoronImage"
        return "Asn_Lv3ImageBackground" if aux else "Asn_Lv3Image"
    if stage3 == SPEC3:
        if exp_type == "MIR_MRS":
            return "Asn_Lv3MIRMRSBackground" if aux else "Asn_Lv3MIRMRS"
        if exp_type == "NRS_IFU":
            return "Asn_Lv3NRSIFUBackground" if aux else "Asn_Lv3NRSIFU"
        if aux:
            return "Asn_Lv3SpecAux"
        return {
            "NRS_FIXEDSLIT": "Asn_Lv3NRSFSS",
            "NRS_MSASPEC": "Asn_Lv3SpectralSource",
            "MIR_LRS-FIXEDSLIT": "Asn_Lv3SpectralTarget",
            "NIS_SOSS": "Asn_Lv3SlitlessSpectral",
            "NRC_WFSS": "Asn_Lv3WFSSNRC",
            "NIS_WFSS": "Asn_Lv3WFSSNIS",
            "MIR_WFSS": "Asn_Lv3WFSSMIR",
        }.get(exp_type, "Asn_Lv3SpectralTarget")
    raise Level3Error(f"{route.mode}: stage 3 {stage3} has no level-3 rule")


def _optics(rule: str, h: HeaderView) -> tuple[tuple[str, str], ...]:
    if rule in ("Asn_Lv3MIRMRS", "Asn_Lv3MIRMRSBackground"):
        return ()
    if rule in ("Asn_Lv3NRSIFU", "Asn_Lv3NRSIFUBackground"):
        return (("opt_elem", _value(h, "GRATING")),)
    if rule == "Asn_Lv3WFSSNRC":
        return (("opt_elem", _value(h, "PUPIL")), ("opt_elem2", _value(h, "FILTER")))
    if rule == "Asn_Lv3WFSSNIS":
        return (("opt_elem", _value(h, "FILTER")), ("opt_elem2", _value(h, "PUPIL")))
    if rule == "Asn_Lv3WFSSMIR":
        return (("opt_elem", _value(h, "FILTER")),)
    slit = _value(h, "FXD_SLIT")
    if slit in _S200A:
        slit = "S200A1|S200A2"  # fxd_slit2: these two combine
    return (
        ("opt_elem", _value(h, "FILTER")),
        ("opt_elem2", _first(h, "PUPIL", "GRATING")),
        ("fxd_slit", slit),
        ("subarray", _value(h, "SUBARRAY")),
    )


def candidate_key(route: Route, exposure: Exposure, *, acid: str | None = None) -> Level3Key:
    """The level-3 candidate ``exposure`` belongs to when calibrated along ``route``.

    ``route`` is one of the exposure's stage-2 passes (``Route.passes``): a
    full-frame NIRCam coronagraphic exposure feeds coron3 through its first
    pass and image3 through its second. ``acid``: a plan's candidate id
    (``c1NNN``); without it the observation candidate ``o<observation>``.

    Raises Level3Error for an exposure that enters no level-3 association.
    """
    h = exposure.keywords
    if route.stage3 is None:
        raise Level3Error(f"{exposure.exposure_id}: {route.mode} feeds no stage 3")
    if route.role == "imprint" or h.flag("IS_IMPRT"):
        raise Level3Error(f"{exposure.exposure_id}: imprint exposures enter no level-3 association")
    if route.role not in ("science", "psf", BACKGROUND):
        raise Level3Error(f"{exposure.exposure_id}: a {route.role} exposure is no level-3 member")
    if route.stage3 == TSO3 and not route.is_tso:
        raise Level3Error(f"{exposure.exposure_id}: tso3 needs a time series")
    observation = exposure.name.observation
    planned = acid is not None and not acid.startswith("o")
    acid = acid or f"o{int(observation):03d}"
    if not _ACID.fullmatch(acid):
        raise Level3Error(f"acid {acid!r} is not a candidate id (oNNN, c1NNN, aNNNN)")
    background = route.role == BACKGROUND
    if background and route.stage3 in (CORON3, AMI3, TSO3, WFS_IMAGE3):
        raise Level3Error(f"{exposure.exposure_id}: jwst's {route.stage3} rule takes no "
                          "background-target exposures")
    if route.role == "psf" and route.stage3 not in (CORON3, AMI3):
        raise Level3Error(f"{exposure.exposure_id}: a PSF reference only enters coron3/ami3")
    # Backgrounds join the science's spectral association under a plan's
    # candidate; otherwise (and always for imaging) they make their own.
    probe = _asn_rule(route, aux=False)
    aux = background and not (planned and probe in _SPECTRAL_BACKGROUND_RULES)
    rule = _asn_rule(route, aux=aux)
    target: str | None = _value(h, "TARGETID")
    if planned or route.stage3 in (CORON3, AMI3):
        target = None
    extra: tuple[tuple[str, str], ...] = ()
    if rule == "Asn_Lv3WFSCMB":
        n = exposure.name
        extra = (("detector", n.detector.upper()), ("obs_id", n.visit_id),
                 ("act_id", n.activity.upper()))
    if rule == "Asn_Lv3NRSIFU":
        extra = (("patttype", _value(h, "PATTTYPE")),)
    return Level3Key(
        program=program_of(exposure),
        acid=acid,
        instrument=route.instrument,
        asn_type=ASN_TYPES[route.stage3],
        asn_rule=rule,
        exp_type=route.exp_type,
        tso=route.is_tso,
        optics=_optics(rule, h),
        target=target,
        aux=aux,
        extra=extra,
    )


def _target_id(key: Level3Key, members: Iterable[Exposure]) -> str:
    if key.target is not None:
        return key.target
    science = [m for m in members if m.route is not None and m.route.role == "science"]
    targets = sorted({_value(m.keywords, "TARGETID") for m in science} - {""})
    # get_target: found values joined by "-"; none gives "t000".
    return "-".join(targets)


def _target(key: Level3Key, members: Iterable[Exposure]) -> str:
    text = _target_id(key, members)
    if text.isdigit():
        text = str(int(text))  # TARGETID 1 and "001" are the same target
    return f"t{text:0>3s}"


def product_name(key: Level3Key, members: Iterable[Exposure] = ()) -> str:
    """jwst's level-3 product name for the candidate, lower case, no suffix.

    ``jw<ppppp>-<acid>_<target>_<instrument>_<optical elements>[-<slit>][-<subarray>]``:
    target ``t`` + TARGETID to 3 digits (from the science ``members`` when the
    key has none); optical elements are FILTER and PUPIL/GRATING (the values
    present, CLEAR included, sorted, joined by "-"), ``clear`` when there are
    none; the fixed slit, then the subarray unless FULL. Per rule, as jwst:
    MIRI MRS has no optical elements (dms_product_name_noopt); NIRSpec FS
    leaves ``{source_id}`` and ``{slit_name}`` and MOS ``{source_id}`` for
    spec3 to fill; full-frame NIRCam coronagraphy as imaging ends in
    ``-image3``; WFS&C appends ``-<detector>_{suffix}-<activity>``.
    """
    members = list(members)
    program, acid, instrument = key.program, key.acid, key.instrument.lower()
    target = _target(key, members)
    if key.asn_rule in ("Asn_Lv3MIRMRS", "Asn_Lv3MIRMRSBackground"):
        return f"jw{program}-{acid}_{target}_{instrument}".lower()
    optics = dict(key.optics)
    elements = sorted(
        (optics[k] for k in ("opt_elem", "opt_elem2") if optics.get(k)), key=str.lower
    )
    opt_elem = "-".join(elements) or "clear"
    slits = sorted(set(optics.get("fxd_slit", "").split("|")) - {""}, key=str.lower)
    slit = "-" + "-".join(slits) if slits else ""
    subarray = optics.get("subarray", "")
    subarray = "" if subarray in ("", "FULL") else "-" + subarray
    if key.asn_rule == "Asn_Lv3NRSFSS":
        name = (f"jw{program}-{acid}_{target}-{{source_id}}_{instrument}_{opt_elem}"
                f"-{{slit_name}}{subarray}")
    elif key.asn_rule == "Asn_Lv3SpectralSource":
        name = f"jw{program}-{acid}_{{source_id}}_{instrument}_{opt_elem}{slit}{subarray}"
    elif key.asn_rule in ("Asn_Lv3WFSSNRC", "Asn_Lv3WFSSNIS", "Asn_Lv3WFSSMIR"):
        name = f"jw{program}-{acid}_{target}_{instrument}_{opt_elem}"
    else:
        name = f"jw{program}-{acid}_{target}_{instrument}_{opt_elem}{slit}{subarray}"
    if key.asn_rule == "Asn_Lv3NRCCoronImage":
        name += "-image3"
    if key.asn_rule == "Asn_Lv3WFSCMB":
        extra = dict(key.extra)
        name += f"-{extra['detector']}_{{suffix}}-{extra['act_id']:0>2s}"
    return name.lower()


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
) -> dict[str, Any]:
    """The level-3 association of ``members``, one candidate, along ``route``.

    ``members`` must share one ``candidate_key`` (segments included). Each
    must have its stage-2 product in ``products`` (cal, calints; x1d for a
    spectroscopic background). ``degraded``: why the candidate closed
    incomplete (e.g. "exposure 00003 of 4 never arrived"), written to
    ``degraded_status``. ``acid``: a plan's candidate. ``version_id``
    defaults to the earliest member's start, so a rebuild names the same
    file; the planner passes another stamp for a superseding version.
    """
    if not members:
        raise Level3Error("a level-3 association needs members")
    members = sorted(members, key=lambda e: e.exposure_id)
    keys = {}
    for e in members:
        own = _pass_for(route, e)
        keys[e.exposure_id] = (candidate_key(own, e, acid=acid), own)
    distinct = {k for k, _ in keys.values()}
    key = _merge(distinct)
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
    target = _target_id(key, members)
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
        "products": [{"name": product_name(key, members), "members": entries}],
    }


def _nodded(members: list[Exposure], keys: Mapping[str, tuple[Level3Key, Route]]) -> bool:
    science = [e for e in members if keys[e.exposure_id][1].role == "science"]
    return len(science) >= 2 and all("NOD" in e.keywords.text("PATTTYPE") for e in science)


def _pass_for(route: Route, exposure: Exposure) -> Route:
    """The member's own pass into ``route``'s stage-3 pipeline: its role and
    product come from its own header (a PSF reference, a background)."""
    r = exposure.route
    for p in r.passes if r else ():
        if p.stage3 == route.stage3 and p.mode.endswith("_as_image") == route.mode.endswith("_as_image"):
            return p
    for p in r.passes if r else ():
        if p.stage3 == route.stage3:
            return p
    raise Level3Error(
        f"{exposure.exposure_id}: its route ({r.mode if r else 'unroutable'}) does not feed "
        f"{route.stage3}"
    )


def _merge(keys: set[Level3Key]) -> Level3Key:
    """The one key of a candidate; PSF and background members may differ only
    where jwst leaves them unconstrained (target, aux rule) -- none here."""
    if len(keys) == 1:
        return next(iter(keys))
    science = {k for k in keys if not k.aux}
    if len(science) == 1:
        return next(iter(science))
    detail = "; ".join(sorted(_describe(k) for k in keys))
    raise Level3Error(f"members belong to {len(keys)} different level-3 candidates: {detail}")


def _describe(key: Level3Key) -> str:
    optics = " ".join(f"{k}={v}" for k, v in key.optics if v)
    return (f"{key.asn_type} {key.asn_rule} program={key.program} acid={key.acid} "
            f"exp_type={key.exp_type} target={key.target} tso={key.tso} {optics}").rstrip()


def _constraints(key: Level3Key) -> str:
    extra = " ".join(f"{k}={v}" for k, v in key.extra)
    return f"calstream {_describe(key)} {extra}".rstrip()


# --- validation --------------------------------------------------------------


def level3_schema() -> dict[str, Any]:
    return jwst_schema("asn_schema_jw_level3.json")


_NAME = re.compile(r"jw\d{5}-(o\d{3}|[ca]\d{4})_[a-z0-9{}_.+-]+")


def validate_level3(asn: Mapping[str, Any]) -> None:
    """Raise AssociationInvalid with every reason ``asn`` would fail stage 3:
    jwst's level-3 schema, then what jwst's rules guarantee beyond it (known
    asn_type and member types, a science member, PSF members for coron3 and
    ami3, stage-2 member products, jwst-style product names)."""
    check_jwst_schema(asn, "asn_schema_jw_level3.json", "level-3")
    problems = _problems(asn)
    if problems:
        raise AssociationInvalid("; ".join(problems))


def _problems(asn: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in ("asn_type", "asn_rule", "asn_id", "asn_pool", "program", "target",
                "version_id", "code_version", "degraded_status", "constraints"):
        if not isinstance(asn.get(key), str) or not asn.get(key):
            problems.append(f"{key} missing or not a string")
    asn_type = asn.get("asn_type")
    if asn_type not in LEVEL3_ASN_TYPES:
        problems.append(f"asn_type {asn_type!r} is not a level-3 type "
                        f"({', '.join(sorted(LEVEL3_ASN_TYPES))})")
    acid = asn.get("asn_id")
    if isinstance(acid, str) and not _ACID.fullmatch(acid):
        problems.append(f"asn_id {acid!r} is not a candidate id (oNNN, cNNNN, aNNNN)")
    program = asn.get("program")
    if isinstance(program, str) and not re.fullmatch(r"\d{5}", program):
        problems.append(f"program {program!r} is not 5 digits")
    if isinstance(asn.get("version_id"), str) and not _STAMP.fullmatch(asn["version_id"]):
        problems.append(f"version_id {asn['version_id']!r} is not yyyymmddthhmmss")
    products = asn.get("products") or []
    if not products:
        problems.append("no products")
    for i, product in enumerate(products):
        problems += [f"product {i}: {p}" for p in _product_problems(asn, product)]
    return problems


def _product_problems(asn: Mapping[str, Any], product: Mapping[str, Any]) -> list[str]:
    problems = []
    name = product.get("name")
    prefix = f"jw{asn.get('program')}-{asn.get('asn_id')}_"
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name != name.lower():
        problems.append(f"name {name!r} is not a lower-case jwst level-3 product name")
    elif not name.startswith(prefix):
        problems.append(f"name {name!r} does not start with {prefix!r} (program and asn_id)")
    members = product.get("members") or []
    types = [m.get("exptype") for m in members]
    problems += member_problems(members, MEMBER_TYPES)
    if "science" not in types:
        problems.append("no science member")
    if asn.get("asn_type") in ("coron3", "ami3") and "psf" not in types:
        problems.append(f"{asn.get('asn_type')} needs psf members")
    for m in members:
        expname, exptype = str(m.get("expname")), m.get("exptype")
        suffix = PurePath(expname).name.split(".", 1)[0].rsplit("_", 1)[-1]
        wanted = ("x1d", "x1dints") if exptype == BACKGROUND else ("cal", "calints")
        if exptype in ("science", "psf", BACKGROUND) and suffix not in wanted:
            problems.append(f"{exptype} member {expname} is not a {' or '.join(wanted)} product")
    return problems
