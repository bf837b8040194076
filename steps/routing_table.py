"""The routing table: routing.toml, loaded and checked at import.

The rows are data (steps/routing.toml, shipped with the package); what a
row's ``when`` may name lives here: a header test written KEY=VALUE, or one
of the named conditions below, which need code (a pattern, a lookup table,
a computation). A row that names anything unknown, or a table that would
route some exposure type nowhere, fails the import: a bad table never
routes a single exposure.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib.resources import files
from typing import Any

from calstream.steps.routing_terms import (
    ALWAYS_TSO_EXP_TYPES,
    COMPANION_KINDS,
    DARK,
    DETECTOR1_ONLY,
    DHS_PUPILS,
    DHS_SUBARRAY,
    GUIDER,
    IMAGE2,
    INSTRUMENT_OF,
    PIPELINE_CLASSES,
    SOSS_STRIPE_SUBARRAY,
    SPEC2,
    HeaderView,
)


@dataclass(frozen=True)
class When:
    """A named condition on a header; the name is what the docs show."""

    text: str
    test: Callable[[HeaderView], bool] = field(compare=False, repr=False)

    def __and__(self, other: When) -> When:
        return When(f"{self.text} and {other.text}", lambda h: self.test(h) and other.test(h))

    def __or__(self, other: When) -> When:
        return When(f"({self.text} or {other.text})", lambda h: self.test(h) or other.test(h))

    def __invert__(self) -> When:
        return When(f"not {self.text}", lambda h: not self.test(h))


@dataclass(frozen=True)
class RouteRule:
    """One row of the table. ``mode`` names the row, uniquely."""

    mode: str
    exp_types: tuple[str, ...]
    when: When
    stage2: str | None = None
    stage3: str | None = None
    other: str | None = None
    needs: tuple[str, ...] = ()
    time_series: bool = False
    per_integration: bool = False  # coronagraphy and AMI: rateints without being TSO
    asn_rule: str | None = None  # the jwst level-2b rule that makes this association
    asn_type: str | None = None  # when jwst's differs from image2/spec2 (+ tso- prefix)
    note: str = ""
    also: RouteRule | None = None  # a second stage-2 pass jwst makes of the same exposure

    @property
    def instruments(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(INSTRUMENT_OF[e] for e in self.exp_types))


# --- conditions -------------------------------------------------------------

ALWAYS = When("always", lambda h: True)


def _is(key: str, *values: str) -> When:
    label = values[0] if len(values) == 1 else "/".join(values)
    return When(f"{key}={label}", lambda h: h.text(key) in values)


def _tso_declared(h: HeaderView) -> bool:
    return h.flag("TSOVISIT") or h.text("EXP_TYPE") in ALWAYS_TSO_EXP_TYPES


TIME_SERIES = When("TSOVISIT", _tso_declared)
# jwst matches VISITYPE ".+wfsc.+" for level 2 and excludes any VISITYPE
# containing "wfsc" from image3; every VISITYPE value (PRIME_WFSC_*) satisfies both.
WFSC_VISIT = When("VISITYPE contains WFSC", lambda h: "WFSC" in h.text("VISITYPE"))
LONG_WAVE = When("long-wave detector", lambda h: h.text("DETECTOR").endswith("LONG"))
DHS_PUPIL = When("DHS pupil", lambda h: h.text("PUPIL") in DHS_PUPILS)
DHS_SUBARRAY_READOUT = When(
    "DHS stripe subarray", lambda h: bool(DHS_SUBARRAY.fullmatch(h.text("SUBARRAY")))
)
SOSS_STRIPES = When(
    "SOSS multistripe/superstripe subarray",
    lambda h: bool(SOSS_STRIPE_SUBARRAY.fullmatch(h.text("SUBARRAY"))),
)


def _unocculted(h: HeaderView) -> bool:
    # jwst dms_base.nrccoron_valid_detector: in full frame, only NRCA4 sees the
    # bar mask and only NRCA2 the round masks; the other short-wave detectors
    # image the field around them.
    det, pupil = h.text("DETECTOR"), h.text("PUPIL")
    if pupil == "MASKBAR":
        return det in ("NRCA1", "NRCA2", "NRCA3")
    if pupil == "MASKRND":
        return det in ("NRCA1", "NRCA3", "NRCA4")
    return False


UNOCCULTED = When("detector without an occulter", _unocculted)
NO_MSA_METAFILE = When("no MSAMETFL", lambda h: not h.has("MSAMETFL"))
BACKGROUND_TARGET = When("BKGDTARG", lambda h: h.flag("BKGDTARG"))
# jwst's dms_base._EMPTY, the values a pool column has when it has none;
# "NONE" is not one of them (DMS pools write PATTTYPE=NONE when undithered).
_NO_VALUE = frozenset({"", "NULL", "--", "N", "F", "FALSE", "N/A"})
PATTERN_GIVEN = When("PATTTYPE given (NONE included)",
                     lambda h: h.text("PATTTYPE") not in _NO_VALUE)
MULTI_POINT = When("NUMDTHPT > 1", lambda h: (h.integer("NUMDTHPT") or 1) > 1)

# Grating/filter pairs NIRSpec calibrates (the pairs jwst's optical-path tables list).
_NRS_GRATING_FILTERS = {
    "PRISM": {"CLEAR"},
    "G140M": {"F070LP", "F100LP"},
    "G140H": {"F070LP", "F100LP"},
    "G235M": {"F170LP"},
    "G235H": {"F170LP"},
    "G395M": {"F290LP"},
    "G395H": {"F290LP"},
}


def nirspec_lit_detectors(grating: str, filt: str, slit: str = "") -> frozenset[str]:
    """The NIRSpec detectors a fixed-slit or IFU spectrum lands on.

    Only the long high-resolution spectra cross the gap onto NRS2 from the
    A slits and the IFU; S200B1 sits off-centre so its spectra fall on NRS2,
    reaching NRS1 too in the short G140x/F070LP band. This reproduces jwst's
    NRS_FSS_VALID_OPTICAL_PATHS and NRS_IFU_VALID_OPTICAL_PATHS.
    """
    if filt not in _NRS_GRATING_FILTERS.get(grating, ()):
        return frozenset()
    short_band = filt == "F070LP"
    if slit == "S200B1":
        both = short_band and grating != "PRISM"
        return frozenset({"NRS1", "NRS2"} if both else {"NRS2"})
    both = grating.endswith("H") and not short_band
    return frozenset({"NRS1", "NRS2"} if both else {"NRS1"})


def _dark_detector(slit_key: str | None) -> Callable[[HeaderView], bool]:
    def test(h: HeaderView) -> bool:
        keys = ("GRATING", "FILTER", "DETECTOR") + ((slit_key,) if slit_key else ())
        if not all(h.has(k) for k in keys):
            return False  # an arrival may lack optional keywords; spec2 will judge
        slit = h.text(slit_key) if slit_key else ""
        return h.text("DETECTOR") not in nirspec_lit_detectors(
            h.text("GRATING"), h.text("FILTER"), slit
        )

    return test


FS_DARK_DETECTOR = When("no slit spectrum on this detector", _dark_detector("FXD_SLIT"))
IFU_DARK_DETECTOR = When("no IFU spectrum on this detector", _dark_detector(None))


def _lamp_unusable(h: HeaderView) -> bool:
    # jwst Asn_Lv2NRSLAMPSpectral wants an internal lamp lit behind the OPAQUE
    # filter, through a grating (not the MIRROR: not_invalid_optical_path; an
    # NRS_LAMP image is the row before), and an MSA metafile when the MSA
    # shapes the light.
    return (
        h.text("LAMP") == "NOLAMP"
        or h.text("GRATING") == "MIRROR"
        or h.text("OPMODE") == "GRATING-ONLY"
        or (h.has("FILTER") and h.text("FILTER") != "OPAQUE")
        or (h.text("OPMODE") == "MSASPEC" and not h.has("MSAMETFL"))
    )


LAMP_UNUSABLE = When("no usable lamp spectrum", _lamp_unusable)

# The lamps whose light a fixed-slit grating passes: each grating's own
# lines and flats (the PRISM also the test lamp; G140H the reference lamp).
_NRS_FS_LAMPS = {
    "PRISM": {"LINE4", "FLAT5", "TEST"},
    "G395H": {"LINE3", "FLAT3"}, "G395M": {"LINE3", "FLAT3"},
    "G235H": {"LINE2", "FLAT2"}, "G235M": {"LINE2", "FLAT2"},
    "G140H": {"LINE1", "FLAT1", "FLAT4", "REF"}, "G140M": {"LINE1", "FLAT1", "FLAT4"},
}
_BOTH = frozenset({"NRS1", "NRS2"})


def nirspec_lamp_lit_detectors(opmode: str, grating: str, lamp: str) -> frozenset[str]:
    """The NIRSpec detectors an internal lamp's spectrum lands on.

    The facts of jwst's dms_base.nrslamp_valid_detector, which decides
    whether Asn_Lv2NRSLAMPSpectral makes a lamp association: through the MSA
    any shutter may be open, so both detectors; through the IFU the high
    resolution gratings G235H/G395H reach both, G140H both but with FLAT4
    only NRS1, the medium gratings and the PRISM NRS1 only; through the fixed
    slits both, for the lamps the grating passes. No lamp named, or another
    opmode: none.
    """
    if not lamp:
        return frozenset()
    if opmode == "MSASPEC":
        return _BOTH
    if opmode == "IFU":
        if grating in ("G235H", "G395H") or (grating == "G140H" and lamp != "FLAT4"):
            return _BOTH
        return frozenset({"NRS1"}) if grating in ("G140H", "G140M", "G235M", "G395M",
                                                  "PRISM") else frozenset()
    if opmode == "FIXEDSLIT":
        return _BOTH if lamp in _NRS_FS_LAMPS.get(grating, ()) else frozenset()
    return frozenset()


LAMP_DARK_DETECTOR = When(
    "no lamp spectrum on this detector",
    lambda h: h.text("DETECTOR") not in nirspec_lamp_lit_detectors(
        h.text("OPMODE"), h.text("GRATING"), h.text("LAMP")))

# --- the table --------------------------------------------------------------

CONDITIONS: dict[str, When] = {
    "TIME_SERIES": TIME_SERIES,
    "WFSC_VISIT": WFSC_VISIT,
    "LONG_WAVE": LONG_WAVE,
    "DHS_PUPIL": DHS_PUPIL,
    "DHS_SUBARRAY": DHS_SUBARRAY_READOUT,
    "SOSS_STRIPES": SOSS_STRIPES,
    "UNOCCULTED": UNOCCULTED,
    "NO_MSA_METAFILE": NO_MSA_METAFILE,
    "BACKGROUND_TARGET": BACKGROUND_TARGET,
    "PATTERN_GIVEN": PATTERN_GIVEN,
    "MULTI_POINT": MULTI_POINT,
    "FS_DARK_DETECTOR": FS_DARK_DETECTOR,
    "IFU_DARK_DETECTOR": IFU_DARK_DETECTOR,
    "LAMP_UNUSABLE": LAMP_UNUSABLE,
    "LAMP_DARK_DETECTOR": LAMP_DARK_DETECTOR,
}
TABLE = "routing.toml"
_STAGE2 = (IMAGE2, SPEC2)
_STAGE3 = tuple(p for p in PIPELINE_CLASSES if p not in (IMAGE2, SPEC2, DARK, GUIDER))
_OTHER = (DARK, GUIDER, DETECTOR1_ONLY)
_COLUMNS = {f.name for f in fields(RouteRule)}


class RoutingTableError(ValueError):
    """routing.toml is not a table calstream can route by; the message says where."""


def _condition(token: Any, mode: str) -> When:
    if not isinstance(token, str):
        raise RoutingTableError(f"{mode}: a condition is a string, got {token!r}")
    if token in CONDITIONS:
        return CONDITIONS[token]
    key, eq, values = token.partition("=")
    if not eq or not key or not values or key != key.upper():
        raise RoutingTableError(
            f"{mode}: condition {token!r} is neither KEY=VALUE nor one of {sorted(CONDITIONS)}")
    return _is(key, *values.split("/"))


def _when(tokens: Any, mode: str) -> When:
    if not isinstance(tokens, list):
        raise RoutingTableError(f"{mode}: when is a list of conditions, got {tokens!r}")
    when = ALWAYS
    for i, token in enumerate(tokens):
        condition = _condition(token, mode)
        when = condition if i == 0 else when & condition
    return when


def _one_of(row: Mapping[str, Any], mode: str, column: str, allowed: Iterable[str]) -> None:
    value = row.get(column)
    if value is not None and value not in allowed:
        raise RoutingTableError(f"{mode}: {column} = {value!r} is not one of {sorted(allowed)}")


def _rule(row: Mapping[str, Any], second_passes: Mapping[str, RouteRule]) -> RouteRule:
    mode = row.get("mode")
    if not isinstance(mode, str) or not mode:
        raise RoutingTableError(f"a row without a mode: {dict(row)!r}")
    unknown = set(row) - _COLUMNS
    if unknown:
        raise RoutingTableError(f"{mode}: unknown column(s) {sorted(unknown)}")
    exp_types = row.get("exp_types")
    if not isinstance(exp_types, list) or not exp_types:
        raise RoutingTableError(f"{mode}: exp_types must list at least one EXP_TYPE")
    bad = [e for e in exp_types if e not in INSTRUMENT_OF]
    if bad:
        raise RoutingTableError(f"{mode}: {bad} are not stdatamodels exposure types")
    _one_of(row, mode, "stage2", _STAGE2)
    _one_of(row, mode, "stage3", _STAGE3)
    _one_of(row, mode, "other", _OTHER)
    if bool(row.get("stage2")) == bool(row.get("other")):
        raise RoutingTableError(f"{mode}: a row has either a stage2 or another path (other)")
    if row.get("stage3") and not row.get("stage2"):
        raise RoutingTableError(f"{mode}: stage3 without stage2")
    needs = row.get("needs", [])
    if not isinstance(needs, list) or any(n not in COMPANION_KINDS for n in needs):
        raise RoutingTableError(f"{mode}: needs {needs!r}: companion kinds are {COMPANION_KINDS}")
    for flag in ("time_series", "per_integration"):
        if not isinstance(row.get(flag, False), bool):
            raise RoutingTableError(f"{mode}: {flag} is true or false")
    also = row.get("also")
    if also is not None and also not in second_passes:
        raise RoutingTableError(f"{mode}: also = {also!r} is no [[second_pass]] row")
    return RouteRule(
        mode, tuple(exp_types), _when(row.get("when", []), mode),
        stage2=row.get("stage2"), stage3=row.get("stage3"), other=row.get("other"),
        needs=tuple(needs), time_series=row.get("time_series", False),
        per_integration=row.get("per_integration", False), asn_rule=row.get("asn_rule"),
        asn_type=row.get("asn_type"), note=row.get("note", ""),
        also=second_passes[also] if also else None,
    )


def parse_routes(text: str) -> tuple[RouteRule, ...]:
    """The rows of a routing table in TOML; RoutingTableError if it is not a valid one."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutingTableError(f"{TABLE} is not TOML: {exc}") from None
    unknown = set(data) - {"route", "second_pass"}
    if unknown:
        raise RoutingTableError(f"unknown table(s) {sorted(unknown)}: only route and second_pass")
    second_passes: dict[str, RouteRule] = {}
    for row in data.get("second_pass", []):
        rule = _rule(row, {})
        second_passes[rule.mode] = rule
    routes = tuple(_rule(row, second_passes) for row in data.get("route", []))
    modes = [r.mode for r in routes] + list(second_passes)
    duplicates = sorted({m for m in modes if modes.count(m) > 1})
    if duplicates:
        raise RoutingTableError(f"modes named twice: {duplicates}")
    unused = set(second_passes) - {r.also.mode for r in routes if r.also}
    if unused:
        raise RoutingTableError(f"second passes no row names: {sorted(unused)}")
    for exp_type in sorted(set(INSTRUMENT_OF)):
        rows = [r for r in routes if exp_type in r.exp_types]
        if not rows or rows[-1].when is not ALWAYS:
            raise RoutingTableError(
                f"{exp_type}: the last row for it must have no condition, so that every "
                "exposure of the type is routed")
    return routes


def rules_by_exp_type(rules: Iterable[RouteRule]) -> dict[str, tuple[RouteRule, ...]]:
    by_type: dict[str, list[RouteRule]] = {}
    for rule in rules:
        for exp_type in rule.exp_types:
            by_type.setdefault(exp_type, []).append(rule)
    return {k: tuple(v) for k, v in by_type.items()}


ROUTES: tuple[RouteRule, ...] = parse_routes(
    files("calstream.steps").joinpath(TABLE).read_text(encoding="utf-8"))
RULES_BY_EXP_TYPE = rules_by_exp_type(ROUTES)


def markdown_table(rules: Iterable[RouteRule] | None = None) -> str:
    """The routing table as Markdown, for the project's docs."""
    lines = [
        "Rows are tried in order for the exposure's EXP_TYPE; the first that matches decides.",
        "",
        "| instrument | EXP_TYPE | when | mode | stage 2 | stage 3 / other | companions | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rule in ROUTES if rules is None else rules:
        when = rule.when.text
        for r in (rule, rule.also) if rule.also else (rule,):
            stage2 = r.stage2 or ""
            if r.stage2:
                stage2 += " (rateints)" if r.time_series or r.per_integration else " (rate)"
            lines.append(
                f"| {'/'.join(r.instruments)} | {', '.join(r.exp_types)} | {when} | {r.mode} "
                f"| {stage2} | {r.stage3 or r.other or ''} | {', '.join(r.needs)} | {r.note} |"
            )
            when = f"second pass of {rule.mode}"
    return "\n".join(lines) + "\n"
