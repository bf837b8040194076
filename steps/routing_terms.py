"""The terms routing speaks in: jwst's pipeline aliases, the companion kinds
of a level-2 association, the JWST instruments' exposure types and
detectors, member roles, and a tolerant view of an arrival's header.

The routing table (routing.toml) may name nothing else; `routing_table`
checks it against these at import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
NONSCIENCE_ROLE: dict[str, str] = {
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

DHS_PUPILS = frozenset({"GDHS0", "GDHS60"})
# stdatamodels' subarray enum has eight DHS stripe readouts; jwst's tso3 rule
# names the four of build 12.3 (sub41stripe1_dhs, ...), the pupils cover the rest.
DHS_SUBARRAY = re.compile(r"SUB\d+STRIPE\d_DHS")
SOSS_STRIPE_SUBARRAY = re.compile(r"SUB\d+STRIPE_SOSS")

_EXACT = 2 ** 53  # an int a float holds exactly
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
        # ``has`` and the value read once: the costliest line of routing.
        value = self._header.get(key)
        if value is None:
            return ""
        text = str(value).strip()
        return "" if text in ("", "N/A", "NULL") else text.upper()

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
        value = self._header.get(key)
        if type(value) is int and -_EXACT <= value <= _EXACT:
            return value  # what the float round trip below gives back (JSON's usual case)
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
