"""Where an exposure goes after detector1, decided from its header alone.

``ROUTES`` is the one table: for each EXP_TYPE, rows are tried in order and
the first whose condition holds decides the stage-2 pipeline, the stage-3
pipeline the exposure later feeds (or another path: calwebb_dark,
calwebb_guider, detector1 only), and the companions its level-2 association
takes. ``route(header)`` applies it; docs are generated from ``ROUTES``.

Sources, in order of authority: jwst's association rules
(jwst/associations/lib/rules_level2b.py, rules_level3.py, dms_base.py), then
jwst's pipeline docs (docs/jwst/pipeline/main.rst), then our notes
(../shared/notes/jwst-routing-and-associations.md). Where the notes and jwst
disagree, the row follows jwst and its ``note`` says so.

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

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Pipeline aliases (jwst/stpipe/integration.py). The tso-/wfs-/nrslamp- .cfg
# names are deprecated (docs/jwst/pipeline/main.rst): those cases run the same
# class, chosen through CRDS parameter references, and differ only in the
# association's asn_type.
IMAGE2 = "calwebb_image2"
SPEC2 = "calwebb_spec2"
IMAGE3 = "calwebb_image3"
SPEC3 = "calwebb_spec3"
TSO3 = "calwebb_tso3"
CORON3 = "calwebb_coron3"
AMI3 = "calwebb_ami3"
WFS_IMAGE3 = "calwebb_wfs-image3"
DARK = "calwebb_dark"
GUIDER = "calwebb_guider"
DETECTOR1_ONLY = "detector1_only"

PIPELINE_CLASSES: dict[str, str] = {
    IMAGE2: "jwst.pipeline.Image2Pipeline",
    SPEC2: "jwst.pipeline.Spec2Pipeline",
    IMAGE3: "jwst.pipeline.Image3Pipeline",
    SPEC3: "jwst.pipeline.Spec3Pipeline",
    TSO3: "jwst.pipeline.Tso3Pipeline",
    CORON3: "jwst.pipeline.Coron3Pipeline",
    AMI3: "jwst.pipeline.Ami3Pipeline",
    WFS_IMAGE3: "jwst.wfs_combine.wfs_combine_step.WfsCombineStep",
    DARK: "jwst.pipeline.DarkPipeline",
    GUIDER: "jwst.pipeline.GuiderPipeline",
}

# Companion kinds a level-2 association can wait for.
BACKGROUND = "background"
IMPRINT = "imprint"
NOD = "nod"
DIRECT_IMAGE = "direct_image"
TARGET_ACQUISITION = "target_acquisition"
COMPANION_KINDS = (BACKGROUND, IMPRINT, NOD, DIRECT_IMAGE, TARGET_ACQUISITION)

# The stdatamodels EXP_TYPE enum (core.schema.yaml), by instrument.
EXP_TYPES: dict[str, frozenset[str]] = {
    "NIRCAM": frozenset({
        "NRC_IMAGE", "NRC_TSIMAGE", "NRC_CORON", "NRC_WFSS", "NRC_TSGRISM", "NRC_GRISM",
        "NRC_TACQ", "NRC_TACONFIRM", "NRC_FOCUS", "NRC_DARK", "NRC_FLAT", "NRC_LED", "NRC_WFSC",
    }),
    "NIRISS": frozenset({
        "NIS_IMAGE", "NIS_AMI", "NIS_WFSS", "NIS_SOSS", "NIS_TACQ", "NIS_TACONFIRM",
        "NIS_FOCUS", "NIS_DARK", "NIS_LAMP", "NIS_EXTCAL",
    }),
    "NIRSPEC": frozenset({
        "NRS_FIXEDSLIT", "NRS_IFU", "NRS_MSASPEC", "NRS_BRIGHTOBJ", "NRS_AUTOWAVE",
        "NRS_AUTOFLAT", "NRS_LAMP", "NRS_IMAGE", "NRS_WATA", "NRS_MSATA", "NRS_TACQ",
        "NRS_TACONFIRM", "NRS_TASLIT", "NRS_CONFIRM", "NRS_VERIFY", "NRS_FOCUS", "NRS_MIMF",
        "NRS_DARK",
    }),
    "MIRI": frozenset({
        "MIR_IMAGE", "MIR_LRS-FIXEDSLIT", "MIR_LRS-SLITLESS", "MIR_MRS", "MIR_WFSS",
        "MIR_LYOT", "MIR_4QPM", "MIR_TACQ", "MIR_TACONFIRM", "MIR_CORONCAL", "MIR_DARKALL",
        "MIR_DARKIMG", "MIR_DARKMRS", "MIR_FLATIMAGE", "MIR_FLATIMAGE-EXT", "MIR_FLATMRS",
        "MIR_FLATMRS-EXT",
    }),
    "FGS": frozenset({
        "FGS_IMAGE", "FGS_FOCUS", "FGS_DARK", "FGS_SKYFLAT", "FGS_INTFLAT", "FGS_ID-IMAGE",
        "FGS_ID-STACK", "FGS_ACQ1", "FGS_ACQ2", "FGS_TRACK", "FGS_FINEGUIDE",
    }),
}
INSTRUMENT_OF: dict[str, str] = {e: inst for inst, types in EXP_TYPES.items() for e in types}

DETECTORS: dict[str, frozenset[str]] = {
    "NIRCAM": frozenset({
        "NRCA1", "NRCA2", "NRCA3", "NRCA4", "NRCALONG",
        "NRCB1", "NRCB2", "NRCB3", "NRCB4", "NRCBLONG",
    }),
    "NIRISS": frozenset({"NIS"}),
    "NIRSPEC": frozenset({"NRS1", "NRS2"}),
    "MIRI": frozenset({"MIRIMAGE", "MIRIFUSHORT", "MIRIFULONG"}),
    "FGS": frozenset({"GUIDER1", "GUIDER2"}),
}

# jwst dms_base.TSO_EXP_TYPES: time series whatever TSOVISIT says.
ALWAYS_TSO_EXP_TYPES = frozenset({"NRC_TSIMAGE", "NRC_TSGRISM", "NRS_BRIGHTOBJ"})

# Member roles of jwst's dms_base.get_exposure_type: the EXP_TYPE decides for
# non-science types, then IS_PSF, IS_IMPRT, BKGDTARG refine science, in that order.
_NONSCIENCE_ROLE = {
    **dict.fromkeys(
        ("MIR_TACQ", "MIR_TACONFIRM", "NIS_TACQ", "NIS_TACONFIRM", "NRC_TACQ", "NRC_TACONFIRM",
         "NRS_CONFIRM", "NRS_MSATA", "NRS_TACQ", "NRS_TACONFIRM", "NRS_TASLIT", "NRS_VERIFY",
         "NRS_WATA"),
        "target_acquisition",
    ),
    **dict.fromkeys(
        ("MIR_DARKALL", "MIR_DARKIMG", "MIR_DARKMRS", "NIS_DARK", "NRC_DARK", "NRS_DARK",
         "FGS_DARK"),
        "dark",
    ),
    **dict.fromkeys(
        ("MIR_FLATIMAGE", "MIR_FLATMRS", "MIR_FLATIMAGE-EXT", "MIR_FLATMRS-EXT", "NRC_FLAT",
         "FGS_SKYFLAT", "FGS_INTFLAT"),
        "flat",
    ),
    **dict.fromkeys(
        ("NIS_FOCUS", "NIS_LAMP", "NIS_EXTCAL", "NRC_FOCUS", "NRC_LED", "NRS_FOCUS",
         "NRS_IMAGE", "NRS_LAMP", "NRC_WFSC"),
        "engineering",
    ),
    **dict.fromkeys(
        ("FGS_ID-IMAGE", "FGS_ID-STACK", "FGS_ACQ1", "FGS_ACQ2", "FGS_TRACK", "FGS_FINEGUIDE"),
        "tracking",
    ),
    "NRS_AUTOFLAT": "autoflat",
    "NRS_AUTOWAVE": "autowave",
}

_DHS_PUPILS = frozenset({"GDHS0", "GDHS60"})
# stdatamodels' subarray enum has eight DHS stripe readouts; jwst's tso3 rule
# names the four of build 12.3 (sub41stripe1_dhs, ...), the pupils cover the rest.
_DHS_SUBARRAY = re.compile(r"SUB\d+STRIPE\d_DHS")
_SOSS_STRIPE_SUBARRAY = re.compile(r"SUB\d+STRIPE_SOSS")

_TRUE = frozenset({"T", "TRUE", "Y", "YES", "1"})
_FALSE = frozenset({"F", "FALSE", "N", "NO", "0", ""})


class RoutingError(ValueError):
    """An exposure no row can route: unknown or contradictory. The message is
    for an operator reading the dead-letter topic."""


class HeaderView:
    """Read access to an arrival's header that tolerates how FITS writers and
    JSON round trips spell values: case, padding, "T"/"F" for booleans,
    integers as strings."""

    def __init__(self, header: Mapping[str, Any]):
        self._header = header

    def raw(self, key: str) -> Any:
        return self._header.get(key)

    def has(self, key: str) -> bool:
        value = self._header.get(key)
        return value is not None and str(value).strip() not in ("", "N/A", "NULL")

    def text(self, key: str) -> str:
        return str(self._header[key]).strip().upper() if self.has(key) else ""

    def flag(self, key: str) -> bool:
        value = self._header.get(key)
        if value is None or isinstance(value, bool):
            return bool(value)
        if isinstance(value, int | float):
            return value != 0
        text = str(value).strip().upper()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise RoutingError(f"{key} = {value!r} is neither true nor false")

    def integer(self, key: str) -> int | None:
        if not self.has(key):
            return None
        value = self._header[key]
        if isinstance(value, bool):
            raise RoutingError(f"{key} = {value!r} is not an integer")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RoutingError(f"{key} = {value!r} is not an integer") from None
        if not number.is_integer():
            raise RoutingError(f"{key} = {value!r} is not an integer")
        return int(number)


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

    @property
    def passes(self) -> tuple[Route, ...]:
        """Every stage-2 run of this exposure: itself, then its second pass."""
        return (self,) + ((self.also,) if self.also else ())


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
WFSC_PAIR = _is("PATTTYPE", "WFSC")
LONG_WAVE = When("long-wave detector", lambda h: h.text("DETECTOR").endswith("LONG"))
DHS_PUPIL = When("DHS pupil", lambda h: h.text("PUPIL") in _DHS_PUPILS)
DHS_SUBARRAY = When(
    "DHS stripe subarray", lambda h: bool(_DHS_SUBARRAY.fullmatch(h.text("SUBARRAY")))
)
SOSS_STRIPES = When(
    "SOSS multistripe/superstripe subarray",
    lambda h: bool(_SOSS_STRIPE_SUBARRAY.fullmatch(h.text("SUBARRAY"))),
)
FULL_FRAME = _is("SUBARRAY", "FULL")


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
OPAQUE = _is("FILTER", "OPAQUE")
MIRROR = _is("GRATING", "MIRROR")
MSA_IMAGING = _is("MSASTATE", "PRIMARYPARK_ALLOPEN") & MIRROR
NO_MSA_METAFILE = When("no MSAMETFL", lambda h: not h.has("MSAMETFL"))
MULTI_POINT = When("NUMDTHPT > 1", lambda h: (h.integer("NUMDTHPT") or 1) > 1)
IFU_NOD = _is("PATTTYPE", "2-POINT-NOD", "4-POINT-NOD")
ALONG_SLIT_NOD = _is("PATTTYPE", "ALONG-SLIT-NOD")

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
    # filter, and an MSA metafile when the MSA shapes the light.
    return (
        h.text("LAMP") == "NOLAMP"
        or h.text("OPMODE") == "GRATING-ONLY"
        or (h.has("FILTER") and h.text("FILTER") != "OPAQUE")
        or (h.text("OPMODE") == "MSASPEC" and not h.has("MSAMETFL"))
    )


LAMP_UNUSABLE = When("no usable lamp spectrum", _lamp_unusable)

# --- the table --------------------------------------------------------------

_IMAGING = ("NRC_IMAGE", "NIS_IMAGE", "MIR_IMAGE", "FGS_IMAGE", "NRS_MIMF")
_NIRSPEC_SCIENCE = ("NRS_FIXEDSLIT", "NRS_IFU", "NRS_MSASPEC", "NRS_BRIGHTOBJ")
_NIRSPEC_LAMPS = ("NRS_AUTOWAVE", "NRS_AUTOFLAT", "NRS_LAMP")

_NRC_CORON_AS_IMAGE = RouteRule(
    "nircam_coron_fullframe_as_image", ("NRC_CORON",), ALWAYS, IMAGE2, IMAGE3,
    asn_rule="Asn_Lv2CoronAsRate",
    note="jwst also calibrates full-frame coronagraphy as plain imaging (rate -> cal) "
    "for image3 of the short-wave field",
)

ROUTES: tuple[RouteRule, ...] = (
    # Wavefront sensing & control, any imager (jwst Asn_Lv2WFSC, Asn_Lv3WFSCMB).
    RouteRule(
        "wfsc_image_pair", _IMAGING, WFSC_VISIT & WFSC_PAIR, IMAGE2, WFS_IMAGE3,
        asn_rule="Asn_Lv2WFSC",
        note="WFS&C dither pairs are combined by wfs_combine",
    ),
    RouteRule(
        "wfsc_image", _IMAGING, WFSC_VISIT, IMAGE2, None, asn_rule="Asn_Lv2WFSC",
        note="WFS&C images are kept out of image3",
    ),
    # --- NIRCam
    RouteRule(
        "nircam_image_tso", ("NRC_IMAGE",), TIME_SERIES, IMAGE2, TSO3,
        time_series=True, asn_rule="Asn_Lv2ImageTSO",
    ),
    RouteRule(
        "nircam_image", ("NRC_IMAGE",), ALWAYS, IMAGE2, IMAGE3, needs=(BACKGROUND,),
        asn_rule="Asn_Lv2Image",
    ),
    RouteRule(
        "nircam_tsimage", ("NRC_TSIMAGE",), ALWAYS, IMAGE2, TSO3,
        time_series=True, asn_rule="Asn_Lv2ImageTSO",
    ),
    RouteRule(
        "nircam_coron_unocculted", ("NRC_CORON",), FULL_FRAME & UNOCCULTED, IMAGE2, IMAGE3,
        needs=(BACKGROUND,), asn_rule="Asn_Lv2Image",
        note="no occulter on this detector, so jwst treats it as imaging (rate) "
        "and keeps it out of coron3",
    ),
    RouteRule(
        "nircam_coron_fullframe_longwave", ("NRC_CORON",), FULL_FRAME & LONG_WAVE, IMAGE2, CORON3,
        needs=(BACKGROUND,), per_integration=True, asn_rule="Asn_Lv2Image",
        also=RouteRule(
            "nircam_coron_fullframe_longwave_as_image", ("NRC_CORON",), ALWAYS, IMAGE2, None,
            asn_rule="Asn_Lv2CoronAsRate",
            note="jwst also makes a rate -> cal pass; image3 of coronagraphic fields "
            "is short-wave only",
        ),
    ),
    RouteRule(
        "nircam_coron_fullframe", ("NRC_CORON",), FULL_FRAME, IMAGE2, CORON3,
        needs=(BACKGROUND,), per_integration=True, asn_rule="Asn_Lv2Image",
        also=_NRC_CORON_AS_IMAGE,
    ),
    RouteRule(
        "nircam_coron", ("NRC_CORON",), ALWAYS, IMAGE2, CORON3, needs=(BACKGROUND,),
        per_integration=True, asn_rule="Asn_Lv2Image",
    ),
    RouteRule(
        "nircam_wfss", ("NRC_WFSS",), ALWAYS, SPEC2, SPEC3, needs=(DIRECT_IMAGE,),
        asn_rule="Asn_Lv2WFSSNRC",
    ),
    RouteRule(
        "nircam_tsgrism_nrcblong", ("NRC_TSGRISM",), _is("DETECTOR", "NRCBLONG"),
        other=DETECTOR1_ONLY, time_series=True,
        note="jwst makes no association for module B long-wave grism time series "
        "(assign_wcs supports module A only)",
    ),
    RouteRule(
        "nircam_dhs", ("NRC_TSGRISM",), DHS_PUPIL & DHS_SUBARRAY, SPEC2, None,
        time_series=True, asn_rule="Asn_Lv2SpecTSO",
        note="DHS (build 12.3): spec2 extracts each stripe; jwst keeps DHS out of tso3",
    ),
    RouteRule(
        "nircam_tsgrism_clear", ("NRC_TSGRISM",), _is("PUPIL", "CLEAR"),
        other=DETECTOR1_ONLY, time_series=True,
        note="no grism in the beam: jwst makes no spec2 or tso3 association",
    ),
    RouteRule(
        "nircam_dhs_longwave", ("NRC_TSGRISM",), DHS_SUBARRAY & LONG_WAVE, SPEC2, None,
        time_series=True, asn_rule="Asn_Lv2SpecTSO",
        note="the long-wave grism of a DHS observation, read in DHS stripes; jwst keeps "
        "DHS subarrays out of tso3",
    ),
    RouteRule(
        "nircam_tsgrism", ("NRC_TSGRISM",), ALWAYS, SPEC2, TSO3,
        time_series=True, asn_rule="Asn_Lv2SpecTSO",
    ),
    RouteRule(
        "nircam_nonscience_image", ("NRC_TACQ", "NRC_TACONFIRM", "NRC_FOCUS"), ALWAYS,
        IMAGE2, None, asn_rule="Asn_Lv2ImageNonScience",
    ),
    RouteRule("nircam_dark", ("NRC_DARK",), ALWAYS, other=DARK),
    RouteRule(
        "nircam_detector1_only", ("NRC_FLAT", "NRC_LED", "NRC_GRISM", "NRC_WFSC"), ALWAYS,
        other=DETECTOR1_ONLY,
        note="calibration/engineering data; NRC_WFSC has no jwst stage-2 rule either",
    ),
    # --- NIRISS
    RouteRule(
        "niriss_image_tso", ("NIS_IMAGE",), TIME_SERIES, IMAGE2, TSO3,
        time_series=True, asn_rule="Asn_Lv2ImageTSO",
    ),
    RouteRule(
        "niriss_image", ("NIS_IMAGE",), ALWAYS, IMAGE2, IMAGE3, needs=(BACKGROUND,),
        asn_rule="Asn_Lv2Image",
    ),
    RouteRule(
        "niriss_ami", ("NIS_AMI",), ALWAYS, IMAGE2, AMI3, needs=(BACKGROUND,),
        per_integration=True, asn_rule="Asn_Lv2Image",
    ),
    RouteRule(
        "niriss_wfss", ("NIS_WFSS",), ALWAYS, SPEC2, SPEC3, needs=(DIRECT_IMAGE,),
        asn_rule="Asn_Lv2WFSSNIS",
    ),
    RouteRule(
        "niriss_soss_f277w_tso", ("NIS_SOSS",), TIME_SERIES & _is("FILTER", "F277W"),
        other=DETECTOR1_ONLY, time_series=True,
        note="F277W SOSS has no flux calibration: jwst makes neither tso-spec2 nor tso3 "
        "(the notes say spec2 without tso3)",
    ),
    RouteRule(
        "niriss_soss_multistripe", ("NIS_SOSS",), TIME_SERIES & SOSS_STRIPES, SPEC2, TSO3,
        time_series=True, asn_rule="Asn_Lv2SpecTSO",
        note="SOSS multistripe/superstripe (build 12.3): stripes recombined in detector1",
    ),
    RouteRule(
        "niriss_soss_tso", ("NIS_SOSS",), TIME_SERIES, SPEC2, TSO3,
        time_series=True, asn_rule="Asn_Lv2SpecTSO",
    ),
    RouteRule(
        "niriss_soss", ("NIS_SOSS",), ALWAYS, SPEC2, SPEC3, needs=(BACKGROUND,),
        asn_rule="Asn_Lv2Spec",
        note="SOSS outside a time-series visit (stripe subarrays included, as jwst does)",
    ),
    RouteRule(
        "niriss_nonscience_image", ("NIS_TACQ", "NIS_TACONFIRM", "NIS_FOCUS"), ALWAYS,
        IMAGE2, None, asn_rule="Asn_Lv2ImageNonScience",
    ),
    RouteRule("niriss_dark", ("NIS_DARK",), ALWAYS, other=DARK),
    RouteRule(
        "niriss_detector1_only", ("NIS_LAMP", "NIS_EXTCAL"), ALWAYS, other=DETECTOR1_ONLY,
    ),
    # --- NIRSpec
    RouteRule(
        "nirspec_opaque", _NIRSPEC_SCIENCE, OPAQUE, other=DETECTOR1_ONLY,
        note="FILTER=OPAQUE lets no sky light in: jwst makes no science association",
    ),
    RouteRule(
        "nirspec_msa_image", ("NRS_MSASPEC",), MSA_IMAGING, IMAGE2, None,
        asn_rule="Asn_Lv2ImageNonScience",
        note="MSA all open with the mirror: an image, not a spectrum",
    ),
    RouteRule(
        "nirspec_mos_no_metafile", ("NRS_MSASPEC",), NO_MSA_METAFILE, other=DETECTOR1_ONLY,
        note="spec2 needs the MSA metafile (MSAMETFL) to find the slitlets; "
        "jwst makes no association without it",
    ),
    RouteRule(
        "nirspec_mos_nod", ("NRS_MSASPEC",), MULTI_POINT, SPEC2, SPEC3, needs=(NOD, IMPRINT),
        asn_rule="Asn_Lv2NRSMSA",
        note="slitlet nods: each nod is science once, the others its background",
    ),
    RouteRule(
        "nirspec_mos", ("NRS_MSASPEC",), ALWAYS, SPEC2, SPEC3, needs=(IMPRINT,),
        asn_rule="Asn_Lv2NRSMSA",
    ),
    RouteRule(
        "nirspec_fs_dark_detector", ("NRS_FIXEDSLIT",), FS_DARK_DETECTOR, other=DETECTOR1_ONLY,
        note="this slit/grating/filter puts no spectrum on this detector",
    ),
    RouteRule(
        "nirspec_fs_nod", ("NRS_FIXEDSLIT",), MULTI_POINT, SPEC2, SPEC3,
        needs=(NOD, BACKGROUND), asn_rule="Asn_Lv2NRSFSS",
        note="nods along the slit: each position is science once, the other primary "
        "positions its background (jwst nods every multi-point FS pattern)",
    ),
    RouteRule(
        "nirspec_fs", ("NRS_FIXEDSLIT",), ALWAYS, SPEC2, SPEC3, needs=(BACKGROUND,),
        asn_rule="Asn_Lv2NRSFSS",
    ),
    RouteRule(
        "nirspec_ifu_dark_detector", ("NRS_IFU",), IFU_DARK_DETECTOR, other=DETECTOR1_ONLY,
        note="this grating/filter puts no IFU spectrum on this detector",
    ),
    RouteRule(
        "nirspec_ifu_nod", ("NRS_IFU",), IFU_NOD, SPEC2, SPEC3, needs=(NOD, IMPRINT),
        asn_rule="Asn_Lv2NRSIFUNod",
    ),
    RouteRule(
        "nirspec_ifu", ("NRS_IFU",), ALWAYS, SPEC2, SPEC3, needs=(IMPRINT, BACKGROUND),
        asn_rule="Asn_Lv2Spec",
    ),
    RouteRule(
        "nirspec_bots_dark_detector", ("NRS_BRIGHTOBJ",), FS_DARK_DETECTOR,
        other=DETECTOR1_ONLY, time_series=True,
        note="this grating/filter puts no S1600A1 spectrum on this detector",
    ),
    RouteRule(
        "nirspec_bots", ("NRS_BRIGHTOBJ",), ALWAYS, SPEC2, TSO3,
        time_series=True, asn_rule="Asn_Lv2SpecTSO",
    ),
    RouteRule(
        "nirspec_lamp_image", ("NRS_LAMP",), MIRROR, IMAGE2, None,
        asn_rule="Asn_Lv2NRSLAMPImage",
        note="lamp through the mirror: an image (the notes say nrslamp-spec2)",
    ),
    RouteRule(
        "nirspec_lamp_unusable", _NIRSPEC_LAMPS, LAMP_UNUSABLE, other=DETECTOR1_ONLY,
        note="no lamp spectrum jwst would calibrate (no lamp, grating-only, "
        "sky light, or an MSA setup without its metafile)",
    ),
    RouteRule(
        "nirspec_lamp", _NIRSPEC_LAMPS, ALWAYS, SPEC2, None,
        asn_rule="Asn_Lv2NRSLAMPSpectral", asn_type="nrslamp-spec2",
        note="calwebb_nrslamp-spec2 is Spec2Pipeline with CRDS lamp parameters",
    ),
    RouteRule(
        "nirspec_nonscience_image",
        ("NRS_IMAGE", "NRS_FOCUS", "NRS_TACQ", "NRS_TACONFIRM", "NRS_CONFIRM", "NRS_WATA",
         "NRS_MSATA", "NRS_TASLIT", "NRS_VERIFY"),
        ALWAYS, IMAGE2, None, asn_rule="Asn_Lv2ImageNonScience",
    ),
    RouteRule(
        "nirspec_mimf", ("NRS_MIMF",), ALWAYS, IMAGE2, IMAGE3, needs=(BACKGROUND,),
        asn_rule="Asn_Lv2Image",
        note="jwst's image3 rule includes NRS_MIMF (the notes and jwst's docs say no stage 3)",
    ),
    RouteRule("nirspec_dark", ("NRS_DARK",), ALWAYS, other=DARK),
    # --- MIRI
    RouteRule(
        "miri_image_tso", ("MIR_IMAGE",), TIME_SERIES, IMAGE2, TSO3,
        time_series=True, asn_rule="Asn_Lv2ImageTSO",
    ),
    RouteRule(
        "miri_image", ("MIR_IMAGE",), ALWAYS, IMAGE2, IMAGE3, needs=(BACKGROUND,),
        asn_rule="Asn_Lv2Image",
    ),
    RouteRule(
        "miri_lrs_fixedslit_tso", ("MIR_LRS-FIXEDSLIT",), TIME_SERIES, SPEC2, TSO3,
        needs=(TARGET_ACQUISITION,), time_series=True,
        asn_rule="Asn_MIRLRSTAConfirm", asn_type="spec2",
        note="jwst's LRS rule names it spec2 even for time series",
    ),
    RouteRule(
        "miri_lrs_fixedslit_nod", ("MIR_LRS-FIXEDSLIT",), ALONG_SLIT_NOD, SPEC2, SPEC3,
        needs=(NOD, TARGET_ACQUISITION), asn_rule="Asn_Lv2MIRLRSFixedSlitNod",
    ),
    RouteRule(
        "miri_lrs_fixedslit", ("MIR_LRS-FIXEDSLIT",), ALWAYS, SPEC2, None,
        needs=(TARGET_ACQUISITION, BACKGROUND), asn_rule="Asn_MIRLRSTAConfirm",
        note="jwst builds LRS slit spec3 only from along-slit nods (or for background "
        "targets); the notes say spec3",
    ),
    RouteRule(
        "miri_lrs_slitless_tso", ("MIR_LRS-SLITLESS",), TIME_SERIES, SPEC2, TSO3,
        needs=(TARGET_ACQUISITION,), time_series=True,
        asn_rule="Asn_MIRLRSTAConfirm", asn_type="spec2",
        note="jwst's LRS rule names it spec2 even for time series",
    ),
    RouteRule(
        "miri_lrs_slitless", ("MIR_LRS-SLITLESS",), ALWAYS, SPEC2, None,
        needs=(TARGET_ACQUISITION, BACKGROUND), asn_rule="Asn_MIRLRSTAConfirm",
    ),
    RouteRule(
        "miri_mrs_tso", ("MIR_MRS",), TIME_SERIES, SPEC2, None,
        time_series=True, asn_rule="Asn_Lv2SpecTSO",
        note="jwst keeps IFU data out of tso3, and time series out of spec3",
    ),
    RouteRule(
        "miri_mrs", ("MIR_MRS",), ALWAYS, SPEC2, SPEC3, needs=(BACKGROUND,),
        asn_rule="Asn_Lv2Spec",
    ),
    RouteRule(
        "miri_wfss", ("MIR_WFSS",), ALWAYS, SPEC2, SPEC3, needs=(DIRECT_IMAGE,),
        asn_rule="Asn_Lv2WFSSMIR",
        note="MIRI WFSS (build 12.3): P750L prism, MIR_IMAGE direct image",
    ),
    RouteRule(
        "miri_coron", ("MIR_LYOT", "MIR_4QPM"), ALWAYS, IMAGE2, CORON3, needs=(BACKGROUND,),
        per_integration=True, asn_rule="Asn_Lv2Image",
    ),
    RouteRule(
        "miri_nonscience_image", ("MIR_TACQ", "MIR_TACONFIRM", "MIR_CORONCAL"), ALWAYS,
        IMAGE2, None, asn_rule="Asn_Lv2ImageNonScience",
    ),
    RouteRule("miri_dark", ("MIR_DARKALL", "MIR_DARKIMG", "MIR_DARKMRS"), ALWAYS, other=DARK),
    RouteRule(
        "miri_detector1_only",
        ("MIR_FLATIMAGE", "MIR_FLATIMAGE-EXT", "MIR_FLATMRS", "MIR_FLATMRS-EXT"),
        ALWAYS, other=DETECTOR1_ONLY,
    ),
    # --- FGS
    RouteRule("fgs_image", ("FGS_IMAGE",), ALWAYS, IMAGE2, IMAGE3, asn_rule="Asn_Lv2FGS"),
    RouteRule("fgs_focus", ("FGS_FOCUS",), ALWAYS, IMAGE2, None, asn_rule="Asn_Lv2FGS"),
    RouteRule("fgs_dark", ("FGS_DARK",), ALWAYS, other=DARK),
    RouteRule(
        "fgs_detector1_only", ("FGS_SKYFLAT", "FGS_INTFLAT"), ALWAYS, other=DETECTOR1_ONLY,
    ),
    RouteRule(
        "fgs_guider",
        ("FGS_ID-IMAGE", "FGS_ID-STACK", "FGS_ACQ1", "FGS_ACQ2", "FGS_TRACK", "FGS_FINEGUIDE"),
        ALWAYS, other=GUIDER,
        note="guide-star data: calwebb_guider replaces detector1 and stage 2",
    ),
)


def _rules_by_exp_type(rules: Iterable[RouteRule]) -> dict[str, tuple[RouteRule, ...]]:
    by_type: dict[str, list[RouteRule]] = {}
    for rule in rules:
        for exp_type in rule.exp_types:
            by_type.setdefault(exp_type, []).append(rule)
    return {k: tuple(v) for k, v in by_type.items()}


_RULES = _rules_by_exp_type(ROUTES)

# --- deciding ---------------------------------------------------------------


def exposure_role(header: Mapping[str, Any] | HeaderView) -> str:
    """The exposure's member type in jwst's terms (dms_base.get_exposure_type)."""
    h = header if isinstance(header, HeaderView) else HeaderView(header)
    role = _NONSCIENCE_ROLE.get(h.text("EXP_TYPE"))
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
    dhs_pupil = pupil in _DHS_PUPILS
    dhs_subarray = bool(_DHS_SUBARRAY.fullmatch(subarray))
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
    h = HeaderView(header)
    instrument, exp_type = _identify(h)
    problems = _contradictions(h, exp_type)
    if problems:
        raise RoutingError(f"{instrument} {exp_type}: " + "; ".join(problems))
    h.flag("TSOVISIT")  # a garbled TSOVISIT is an error even where rows do not look
    for rule in _RULES[exp_type]:
        if rule.when.test(h):
            return _make_route(rule, h, instrument, exp_type)
    raise RoutingError(f"{instrument} {exp_type}: no routing rule matches")  # table bug


# PSF references and background targets calibrated alone: jwst names their
# level-2 associations with the auxiliary rules (Constraint_Special).
_SPECIAL_LEVEL2_RULES = {"Asn_Lv2Image": "Asn_Lv2ImageSpecial",
                         "Asn_Lv2Spec": "Asn_Lv2SpecSpecial"}


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
        asn_rule=(_SPECIAL_LEVEL2_RULES.get(rule.asn_rule, rule.asn_rule)
                  if role in ("psf", BACKGROUND) and not is_tso else rule.asn_rule),
        reason=f"{reason[0]}: " + "; ".join(reason[1:]),
        also=also,
    )


def markdown_table(rules: Iterable[RouteRule] = ROUTES) -> str:
    """The routing table as Markdown, for the project's docs."""
    lines = [
        "Rows are tried in order for the exposure's EXP_TYPE; the first that matches decides.",
        "",
        "| instrument | EXP_TYPE | when | mode | stage 2 | stage 3 / other | companions | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rule in rules:
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
