"""The primary-header keywords an uncal exposure is described by, and why each.

The single list that the watcher (what an arrival carries downstream), the
message contract and the planner share; which are required (they identify
the exposure or decide routing and completeness), which must be text, and
which a guider's header does not have. Kept apart from ``exposure`` (the
checks of a file's name against its header, and of a header copy), which
reads these lists.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keyword:
    name: str  # FITS keyword in the primary header
    required: bool
    why: str


# The primary-header keywords an arrival carries downstream: the single list
# that the watcher, the message contract and the planner share. Required ones
# identify the exposure or decide routing and completeness; the others refine
# routing and association membership when the instrument mode has them.
EXPOSURE_KEYWORDS: tuple[Keyword, ...] = (
    Keyword("PROGRAM", True, "program id, 5 characters; also in the file name"),
    Keyword("OBSERVTN", True, "observation number, 3 digits; also in the file name"),
    Keyword("VISIT", True, "visit number, 3 digits; also in the file name"),
    Keyword("VISITGRP", True, "visit group, 2 digits; also in the file name"),
    Keyword("SEQ_ID", True, "parallel sequence (1 prime, 2-5 parallel); also in the file name"),
    Keyword("ACT_ID", True, "activity, 2 base-36 characters; also in the file name"),
    Keyword("EXPOSURE", True, "exposure number, 5 digits; also in the file name"),
    Keyword("INSTRUME", True, "instrument: routing"),
    Keyword("DETECTOR", True, "detector; also in the file name, lower case"),
    Keyword("EXP_TYPE", True, "exposure type: routing"),
    Keyword("NEXPOSUR", True, "exposures planned in the visit: visit completeness"),
    Keyword("NINTS", True, "integrations: TSO needs NINTS >= 2"),
    Keyword("NGROUPS", True, "groups per integration"),
    Keyword("SUBARRAY", True, "subarray: optical path, DHS and SOSS stripe modes"),
    Keyword("ENGQLPTG", True, "pointing quality: PLANNED exposures are held before stage 2"),
    Keyword("DATE-OBS", True, "UTC date of the exposure start: CRDS use-after"),
    Keyword("TIME-OBS", True, "UTC time of the exposure start: CRDS use-after"),
    Keyword("MODULE", False, "NIRCam module: number of detectors expected"),
    Keyword("CHANNEL", False, "NIRCam/MIRI channel"),
    Keyword("FILTER", False, "optical path"),
    Keyword("PUPIL", False, "optical path; NIRCam DHS pupils"),
    Keyword("GRATING", False, "optical path"),
    Keyword("FXD_SLIT", False, "NIRSpec fixed slit: optical path"),
    Keyword("BAND", False, "MIRI MRS band: optical path"),
    Keyword("MSASTATE", False, "NIRSpec MSA state: MSA imaging routes to image2"),
    Keyword("MSAMETFL", False, "NIRSpec MSA metafile: MOS spec2 cannot run without it"),
    Keyword("OPMODE", False, "NIRSpec lamp operating mode: lamp routing"),
    Keyword("LAMP", False, "NIRSpec internal lamp: lamp routing"),
    Keyword("TSOVISIT", False, "time-series visit: routing"),
    Keyword("VISITYPE", False, "visit type: WFS&C routing"),
    Keyword("PATTTYPE", False, "dither/nod pattern: nod backgrounds, WFSC"),
    Keyword("NUMDTHPT", False, "dither points in the pattern"),
    Keyword("PATT_NUM", False, "position in the pattern"),
    Keyword("SUBPXPTS", False, "sub-pixel dither points"),
    Keyword("EXSEGNUM", False, "segment number; must match -segNNN in the name"),
    Keyword("EXSEGTOT", False, "segments in the exposure: visit completeness"),
    Keyword("INTSTART", False, "first integration in this segment"),
    Keyword("INTEND", False, "last integration in this segment"),
    Keyword("BKGDTARG", False, "background target: association member role"),
    Keyword("IS_PSF", False, "PSF reference: coronagraphy and AMI members"),
    Keyword("IS_IMPRT", False, "NIRSpec imprint exposure"),
    Keyword("MOSTILNO", False, "mosaic tile: matches imprints"),
    Keyword("DITHPTIN", False, "dither point index: matches imprints"),
    Keyword("TARGETID", False, "target: level-3 product names"),
    Keyword("TARGPROP", False, "proposer's target name"),
    Keyword("TARGNAME", False, "target name: without TARGETID, level-3 candidates and names "
            "number targets by it, as asn_make_pool does"),
    Keyword("EXPCOUNT", False, "exposure count in the visit"),
    Keyword("VISITSTA", False, "visit status"),
    Keyword("APERNAME", False, "science aperture: number of detectors expected"),
    Keyword("EFFEXPTM", False, "effective exposure time"),
    Keyword("READPATT", False, "readout pattern"),
)
REQUIRED_KEYWORDS: tuple[str, ...] = tuple(k.name for k in EXPOSURE_KEYWORDS if k.required)
# header_copy_problems (exposure.py) compares the first seven with the name's parts, and
# the ninth with its detector, in one step.
assert REQUIRED_KEYWORDS[:7] == ("PROGRAM", "OBSERVTN", "VISIT", "VISITGRP", "SEQ_ID", "ACT_ID",
                                 "EXPOSURE") and REQUIRED_KEYWORDS[8] == "DETECTOR"
# Read as text by routing, level-3 names, the pointing hold and the arrival's
# schema: a number or a truth value there is no JWST exposure's (ENGQLPTG =
# 3.5 would pass the hold as "not PLANNED"; a PROGRAM the door did not give
# as the name's text could not be in an arrival). header_copy_problems
# finds PROGRAM and DETECTOR by comparing them with the name's text, and the
# others by their positions in REQUIRED_KEYWORDS.
TEXT_KEYWORDS = ("PROGRAM", "INSTRUME", "DETECTOR", "EXP_TYPE", "SUBARRAY", "ENGQLPTG")
assert tuple(REQUIRED_KEYWORDS.index(k) for k in TEXT_KEYWORDS) == (0, 7, 8, 9, 13, 14)
# FGS guide-star data (calwebb_guider) comes from the guiding activity, not
# from a planned exposure: its headers carry no visit group, sequence,
# activity, exposure number or pointing quality, and its names none of them.
GUIDER_EXP_TYPES = frozenset({
    "FGS_ACQ1", "FGS_ACQ2", "FGS_FINEGUIDE", "FGS_ID-IMAGE", "FGS_ID-STACK", "FGS_TRACK",
})
NOT_IN_GUIDER_HEADERS: tuple[str, ...] = ("VISITGRP", "SEQ_ID", "ACT_ID", "EXPOSURE", "ENGQLPTG")
OPTIONAL_KEYWORDS: tuple[str, ...] = tuple(k.name for k in EXPOSURE_KEYWORDS if not k.required)
