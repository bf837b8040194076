"""Where an exposure goes after detector1, decided from its header alone.

The table is data: steps/routing.toml, loaded and checked at import by
`routing_table` (``ROUTES``). For each EXP_TYPE, rows are tried in order and
the first whose condition holds decides the stage-2 pipeline, the stage-3
pipeline the exposure later feeds (or another path: calwebb_dark,
calwebb_guider, detector1 only), and the companions its level-2 association
takes. ``route(header)`` applies it; docs/routing.md is generated from it
(``markdown_table``).

Two rules apply to every row rather than living in it:

* Time series. A row marked ``time_series`` describes TSO data (TSOVISIT
  true, or an always-TSO EXP_TYPE). As in jwst.lib.pipe_utils.is_tso, an
  exposure with fewer than two integrations is not a time series: it is
  calibrated from its rate product and feeds no stage 3 (one integration
  makes no light curve, and jwst's own tso3 rule drops SOSS with NINTS=1).
* Special members. Backgrounds (BKGDTARG) and imprints (IS_IMPRT) are
  calibrated alone, as jwst's *Special/Imprint level-2 rules do; a background
  only keeps its imprint companion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calstream.steps.kept_hash import kept_hash, state_without_hash
from calstream.steps.keyword_memo import ByKeywordsRead
from calstream.steps.routing_table import (
    ROUTES,
    RULES_BY_EXP_TYPE,
    RouteRule,
    RoutingTableError,
    When,
    markdown_table,
    nirspec_lit_detectors,
)
from calstream.steps.routing_terms import (
    ALWAYS_TSO_EXP_TYPES,
    AMI3,
    BACKGROUND,
    COMPANION_KINDS,
    CORON3,
    DARK,
    DETECTOR1_ONLY,
    DETECTORS,
    DHS_PUPILS,
    DHS_SUBARRAY,
    DIRECT_IMAGE,
    EXP_TYPES,
    GUIDER,
    IMAGE2,
    IMAGE3,
    IMPRINT,
    INSTRUMENT_OF,
    NOD,
    NONSCIENCE_ROLE,
    PIPELINE_CLASSES,
    SPEC2,
    SPEC3,
    TARGET_ACQUISITION,
    TSO3,
    WFS_IMAGE3,
    HeaderView,
    RoutingError,
)

__all__ = [
    "ALWAYS_TSO_EXP_TYPES", "AMI3", "BACKGROUND", "COMPANION_KINDS", "CORON3", "DARK",
    "DETECTOR1_ONLY", "DETECTORS", "DIRECT_IMAGE", "EXP_TYPES", "GUIDER", "IMAGE2", "IMAGE3",
    "IMPRINT", "INSTRUMENT_OF", "NOD", "PIPELINE_CLASSES", "ROUTES", "SPEC2", "SPEC3",
    "TARGET_ACQUISITION", "TSO3", "WFS_IMAGE3", "HeaderView", "Route", "RouteRule",
    "RoutingError", "RoutingTableError", "When", "exposure_role", "level1_pipeline",
    "markdown_table",
    "nirspec_lit_detectors", "route",
]  # fmt: skip


@dataclass(frozen=True)
class Route:
    """What happens to one exposure after detector1."""

    instrument: str
    exp_type: str
    mode: str
    stage2: str | None  # pipeline alias, or None
    stage2_input: str | None  # "rate" | "rateints", None without stage 2
    stage3: str | None
    other: str | None  # calwebb_dark | calwebb_guider | detector1_only
    is_tso: bool
    needs: tuple[str, ...]  # companion kinds stage 2 takes (see associations for when it waits)
    role: str  # the exposure's own member type: science, background, imprint, psf, ...
    asn_type: str | None  # jwst level-2b asn_type
    asn_rule: str | None
    reason: str
    also: Route | None = None

    @property
    def stage2_class(self) -> str | None:
        return PIPELINE_CLASSES.get(self.stage2) if self.stage2 else None

    @property
    def stage3_class(self) -> str | None:
        return PIPELINE_CLASSES.get(self.stage3) if self.stage3 else None

    # Routes are the planner's memo and index keys: hashed once (steps/kept_hash.py).
    __hash__ = kept_hash
    __getstate__ = state_without_hash

    @property
    def passes(self) -> tuple[Route, ...]:
        """Every stage-2 run of this exposure: itself, then its second pass."""
        return (self,) + ((self.also,) if self.also else ())


# --- deciding ---------------------------------------------------------------


def exposure_role(header: Mapping[str, Any] | HeaderView) -> str:
    """The exposure's member type in jwst's terms (dms_base.get_exposure_type)."""
    h = header if isinstance(header, HeaderView) else HeaderView(header)
    role = NONSCIENCE_ROLE.get(h.text("EXP_TYPE"))
    if role:
        return role
    for key, special in (("IS_PSF", "psf"), ("IS_IMPRT", "imprint"), ("BKGDTARG", BACKGROUND)):
        if h.flag(key):
            return special
    return "science"


def _identify(h: HeaderView) -> tuple[str, str]:
    instrument, exp_type = h.text("INSTRUME"), h.text("EXP_TYPE")
    if not instrument:
        raise RoutingError("INSTRUME is missing: cannot tell which instrument took the exposure")
    if not exp_type:
        raise RoutingError(f"EXP_TYPE is missing on this {instrument} exposure")
    if instrument not in EXP_TYPES:
        raise RoutingError(
            f"INSTRUME={instrument} is not a JWST instrument ({', '.join(sorted(EXP_TYPES))})"
        )
    owner = INSTRUMENT_OF.get(exp_type)
    if owner is None:
        raise RoutingError(
            f"EXP_TYPE={exp_type} is not a known exposure type "
            f"(not in the stdatamodels EXP_TYPE list for {instrument})"
        )
    if owner != instrument:
        raise RoutingError(
            f"EXP_TYPE={exp_type} is a {owner} exposure type but INSTRUME={instrument}"
        )
    detector = h.text("DETECTOR")
    if detector and detector not in DETECTORS[instrument]:
        raise RoutingError(f"DETECTOR={detector} is not a {instrument} detector")
    return instrument, exp_type


def _contradictions(h: HeaderView, exp_type: str) -> list[str]:
    """Headers that describe no possible exposure; spec2 would fail on them later."""
    problems = []
    pupil, subarray, detector, filt = (
        h.text("PUPIL"), h.text("SUBARRAY"), h.text("DETECTOR"), h.text("FILTER")
    )
    dhs_pupil = pupil in DHS_PUPILS
    dhs_subarray = bool(DHS_SUBARRAY.fullmatch(subarray))
    if exp_type == "NRC_TSGRISM":
        if dhs_pupil and detector.endswith("LONG"):
            problems.append(
                f"PUPIL={pupil} is a short-wave DHS pupil but DETECTOR={detector} is long-wave"
            )
        elif dhs_pupil and not dhs_subarray:
            problems.append(
                f"PUPIL={pupil} (DHS) needs a DHS stripe subarray "
                f"(SUB41STRIPE1_DHS, SUB82STRIPE2_DHS, SUB164STRIPE4_DHS, SUB260STRIPE4_DHS, ...), "
                f"got SUBARRAY={subarray or 'missing'}"
            )
        if dhs_subarray and not dhs_pupil and detector and not detector.endswith("LONG"):
            problems.append(
                f"SUBARRAY={subarray} (DHS) on short-wave detector {detector} needs a DHS pupil "
                f"(GDHS0/GDHS60), got PUPIL={pupil or 'missing'}"
            )
    if exp_type == "MIR_WFSS" and filt and filt != "P750L":
        problems.append(f"MIR_WFSS disperses with the P750L prism, got FILTER={filt}")
    if exp_type == "NRC_WFSS" and pupil and pupil not in ("GRISMR", "GRISMC"):
        problems.append(f"NRC_WFSS needs PUPIL=GRISMR/GRISMC, got PUPIL={pupil}")
    if exp_type == "NIS_WFSS" and filt and filt not in ("GR150R", "GR150C"):
        problems.append(f"NIS_WFSS needs FILTER=GR150R/GR150C, got FILTER={filt}")
    if exp_type == "NIS_SOSS" and pupil and pupil != "GR700XD":
        problems.append(f"NIS_SOSS needs PUPIL=GR700XD, got PUPIL={pupil}")
    nints = h.integer("NINTS")
    if nints is not None and nints < 1:
        problems.append(f"NINTS={nints}: an exposure has at least one integration")
    return problems


def route(header: Mapping[str, Any]) -> Route:
    """Route one exposure from its header (FITS keyword -> value).

    Raises RoutingError, with a reason for the dead-letter topic, for an
    unknown or contradictory exposure.
    """
    return _ROUTES(header)


def _route(header: Mapping[str, Any]) -> Route:
    h = HeaderView(header)
    instrument, exp_type = _identify(h)
    problems = _contradictions(h, exp_type)
    if problems:
        raise RoutingError(f"{instrument} {exp_type}: " + "; ".join(problems))
    h.flag("TSOVISIT")  # a garbled TSOVISIT is an error even where rows do not look
    for rule in RULES_BY_EXP_TYPE[exp_type]:
        if rule.when.test(h):
            return _make_route(rule, h, instrument, exp_type)
    raise RoutingError(f"{instrument} {exp_type}: no routing rule matches")  # table bug


# Routing is pure: a header with the same values for the keywords its routing
# read takes the same path to the same Route (a few paths per EXP_TYPE).
_ROUTES: ByKeywordsRead[Route] = ByKeywordsRead(_route, first="EXP_TYPE", passes=(RoutingError,))


DETECTOR1 = "calwebb_detector1"
# The routes jwst calibrates with another pipeline *instead of* detector1:
# darks stop before dark_current (calwebb_dark) and guide-star data has a
# pipeline of its own (calwebb_guider). Their products feed no stage 2.
LEVEL1_INSTEAD_OF_DETECTOR1 = (DARK, GUIDER)


def level1_pipeline(header: Mapping[str, Any]) -> str:
    """The pipeline an arrival runs first: calwebb_detector1, or the
    calwebb_dark / calwebb_guider its route names in detector1's place.

    An exposure that cannot be routed runs detector1, as before: its quick
    look is still useful, and the planner dead-letters the routing error.
    """
    try:
        other = route(header).other
    except RoutingError:
        return DETECTOR1
    return other if other in LEVEL1_INSTEAD_OF_DETECTOR1 else DETECTOR1


# PSF references and background targets calibrated alone: jwst names their
# level-2 associations with the auxiliary rules (Constraint_Special), every
# spectral mode's with Asn_Lv2SpecSpecial; imprints calibrated alone with
# Asn_Lv2SpecImprint. Nothing reads the name but people.
_SPECIAL_LEVEL2_RULES = {"Asn_Lv2Image": "Asn_Lv2ImageSpecial"}
_SPECTRAL_LEVEL2_RULES = frozenset({
    "Asn_Lv2Spec", "Asn_Lv2NRSFSS", "Asn_Lv2NRSMSA", "Asn_Lv2NRSIFUNod", "Asn_MIRLRSTAConfirm",
    "Asn_Lv2MIRLRSFixedSlitNod", "Asn_Lv2WFSSNIS", "Asn_Lv2WFSSNRC", "Asn_Lv2WFSSMIR"})


def _level2_rule(rule: str | None, role: str, is_tso: bool) -> str | None:
    if rule in _SPECTRAL_LEVEL2_RULES and role == IMPRINT:
        return "Asn_Lv2SpecImprint"
    if role not in ("psf", BACKGROUND) or is_tso:
        return rule
    if rule in _SPECTRAL_LEVEL2_RULES:
        return "Asn_Lv2SpecSpecial"
    return _SPECIAL_LEVEL2_RULES.get(rule, rule)


def _make_route(rule: RouteRule, h: HeaderView, instrument: str, exp_type: str) -> Route:
    nints = h.integer("NINTS")
    single_integration = rule.time_series and nints is not None and nints < 2
    is_tso = rule.time_series and not single_integration
    role = exposure_role(h)
    needs = rule.needs
    stage3 = rule.stage3
    reason = [f"{instrument} {exp_type}"]
    if rule.when.text != "always":
        reason[0] += f" ({rule.when.text})"
    if rule.note:
        reason.append(rule.note)
    if single_integration and rule.stage2:
        stage3 = None
        reason.append(f"NINTS={nints}: not a time series, calibrated from rate, no stage 3")
    if role == IMPRINT:
        needs = ()
        reason.append("imprint exposure: calibrated alone")
    elif role == BACKGROUND:
        needs = tuple(n for n in needs if n == IMPRINT)
        reason.append("background target: calibrated alone" + (" with its imprint" if needs else ""))
    stage2_input = None
    asn_type = None
    if rule.stage2:
        stage2_input = "rateints" if is_tso or rule.per_integration else "rate"
        asn_type = rule.asn_type or ("image2" if rule.stage2 == IMAGE2 else "spec2")
        if is_tso and not rule.asn_type:
            asn_type = "tso-" + asn_type
    destination = (
        f"{rule.stage2} on {stage2_input}, then {stage3 or 'no stage 3'}"
        if rule.stage2
        else rule.other or "nothing"
    )
    reason.append(destination)
    also = None
    if rule.also and role not in (BACKGROUND, IMPRINT):
        also = _make_route(rule.also, h, instrument, exp_type)
    return Route(
        instrument=instrument,
        exp_type=exp_type,
        mode=rule.mode,
        stage2=rule.stage2,
        stage2_input=stage2_input,
        stage3=stage3,
        other=rule.other,
        is_tso=is_tso,
        needs=needs,
        role=role,
        asn_type=asn_type,
        asn_rule=_level2_rule(rule.asn_rule, role, is_tso),
        reason=f"{reason[0]}: " + "; ".join(reason[1:]),
        also=also,
    )
