"""Level-3 candidates: which exposures one stage-3 run combines, and its product's name.

See `level3` for the rules (jwst's rules_level3.py with header keywords
standing in for the pool columns); this module computes the candidate key
of one exposure (``candidate_key``) and jwst's product name of a candidate
(``product_name``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from calstream.steps.associations.level2 import AssociationError
from calstream.steps.associations.records import Exposure, program_of
from calstream.steps.kept_hash import kept_hash, state_without_hash
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
# rules_level3_base.py _REGEX_ACID_VALUE
ACID = re.compile(r"o\d{3}|(c|a)\d{4}")
# dms_base._EMPTY: values jwst treats as "keyword not given".
_EMPTY = frozenset({"", "NULL", "--", "N", "F", "FALSE", "N/A", "NONE"})
# The two primary S200A slits combine (Constraint_Optical_Path's fxd_slit2).
_S200A = frozenset({"S200A1", "S200A2"})
# The background targets Asn_Lv3SpecAux combines (rules_level3.py, allowed_bkgdtarg).
_SPEC_AUX_EXP_TYPES = frozenset({"MIR_LRS-FIXEDSLIT", "NRS_FIXEDSLIT"})
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
    ``target_name``: the TARGNAME where the header has no TARGETID (uncal
    files never do): asn_make_pool numbers targets by name, so the name
    separates candidates and `target_id` turns it into jwst's number.
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
    target_name: str = ""

    def optic(self, name: str) -> str:
        return dict(self.optics).get(name, "")

    # The planner looks candidates up by key several times per event:
    # hashed once (steps/kept_hash.py).
    __hash__ = kept_hash
    __getstate__ = state_without_hash


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
    if not ACID.fullmatch(acid):
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
    if rule == "Asn_Lv3SpecAux" and route.exp_type not in _SPEC_AUX_EXP_TYPES:
        # Asn_Lv3SpecAux's allowed_bkgdtarg: no other spectral background target
        # gets a spec3 of its own (IFU and MRS have their own *Background rules).
        raise Level3Error(f"{exposure.exposure_id}: jwst combines background targets of "
                          f"{' and '.join(sorted(_SPEC_AUX_EXP_TYPES))} only, not {route.exp_type}")
    target: str | None = _value(h, "TARGETID")
    target_name = "" if target else _target_name(exposure)
    if planned or route.stage3 in (CORON3, AMI3):
        target, target_name = None, ""
    extra: tuple[tuple[str, str], ...] = ()
    if rule == "Asn_Lv3WFSCMB" and h.text("DMS_NOTE").lower().startswith("wfsc_los_jitter"):
        # Asn_Lv3WFSCMB's not_los_jitter: line-of-sight jitter data is processed apart.
        raise Level3Error(f"{exposure.exposure_id}: DMS_NOTE=wfsc_los_jitter enters no "
                          "wfs-image3 association")
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
        target_name=target_name,
    )


def _target_name(exposure: Exposure) -> str:
    # As written: asn_make_pool compares the names' text, case included.
    return str(exposure.header.get("TARGNAME", "")).strip()


def pool_target_ids(exposures: Iterable[Exposure]) -> dict[str, str]:
    """The TARGETID jwst's ``asn_make_pool`` gives each exposure (by id).

    asn_make_pool ignores the headers' TARGETID and numbers the files it is
    given, in their order (a shell glob: file-name order), by how many
    distinct TARGNAMEs it has met so far. A name met again after a newer one
    therefore takes the newer count, as jwst does.
    """
    found: dict[str, str] = {}
    names: set[str] = set()
    for e in sorted(exposures, key=lambda e: e.exposure_id):
        names.add(_target_name(e))
        found[e.exposure_id] = str(len(names))
    return found


def target_id(key: Level3Key, members: Iterable[Exposure],
              pool: Iterable[Exposure] = ()) -> str:
    """The candidate's TARGETID: the key's, else the science members'
    (get_target: found values joined by "-"), else what asn_make_pool
    numbers them on ``pool`` (the program's exposures; default the members)."""
    if key.target:
        return key.target
    members = list(members)
    science = [m for m in members
               if key.aux or (m.route is not None and m.route.role == "science")]
    targets = sorted({_value(m.keywords, "TARGETID") for m in science} - {""})
    if targets or not science:
        return "-".join(targets)
    numbered = pool_target_ids(list(pool) or members)
    return "-".join(sorted({numbered.get(m.exposure_id, "") for m in science} - {""}, key=int))


def _target(key: Level3Key, members: Iterable[Exposure], pool: Iterable[Exposure],
            target: str | None = None) -> str:
    text = target_id(key, members, pool) if target is None else target
    if text.isdigit():
        text = str(int(text))  # TARGETID 1 and "001" are the same target
    return f"t{text:0>3s}"


def product_name(key: Level3Key, members: Iterable[Exposure] = (),
                 pool: Iterable[Exposure] = (), *, target: str | None = None) -> str:
    """jwst's level-3 product name for the candidate, lower case, no suffix.

    ``jw<ppppp>-<acid>_<target>_<instrument>_<optical elements>[-<slit>][-<subarray>]``:
    target ``t`` + TARGETID to 3 digits (from the science ``members`` when the
    key has none; without any TARGETID, asn_make_pool's number for their
    TARGNAME among ``pool``, see `pool_target_ids`); optical elements are FILTER and PUPIL/GRATING (the values
    present, CLEAR included, sorted, joined by "-"), ``clear`` when there are
    none; the fixed slit, then the subarray unless FULL. Per rule, as jwst:
    MIRI MRS has no optical elements (dms_product_name_noopt); NIRSpec FS
    leaves ``{source_id}`` and ``{slit_name}`` and MOS ``{source_id}`` for
    spec3 to fill; full-frame NIRCam coronagraphy as imaging ends in
    ``-image3``; WFS&C appends ``-<detector>_{suffix}-<activity>``.
    ``target``: the TARGETID text to name it by, given (an association's
    ``target``, judged by who has the pool) instead of worked out.
    """
    members = list(members)
    program, acid, instrument = key.program, key.acid, key.instrument.lower()
    target = _target(key, members, pool, target)
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
