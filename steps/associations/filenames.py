"""Association ids and file names, in jwst's convention, without a clock.

jwst names association files ``jw<program>-<acid>_<stamp>_<asn_type>_<NNNNN>_asn.json``
(dms_base._ASN_NAME_TEMPLATE_STAMP), where the stamp is the generator run's
time and NNNNN counts associations of a type within that run. A streaming
planner rebuilds an association after a restart or when a late companion
arrives, and each rebuild must land on the same name: the work order's
identity and the idempotence of stage 2 depend on it. So here

* the stamp is the science exposure's start (DATE-OBS + TIME-OBS, to the
  second): fixed by the data, and sorting like a generator's time would;
* NNNNN identifies the science file among exposures that start in the same
  second: its detector and segment, and which of jwst's passes over the
  exposure it is (the second pass of full-frame NIRCam coronagraphy).

Level-3 associations use the earliest member's start as the stamp and take
NNNNN from their product name (acid, target, optical path), so each
candidate keeps its number across rebuilds.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any

from calstream.steps.naming import BadName, parse_exposure_name
from calstream.steps.routing import HeaderView

# Append only: a detector's position is part of every file name already written.
DETECTOR_ORDER = (
    "NRCA1", "NRCA2", "NRCA3", "NRCA4", "NRCALONG",
    "NRCB1", "NRCB2", "NRCB3", "NRCB4", "NRCBLONG",
    "NIS", "NRS1", "NRS2", "MIRIMAGE", "MIRIFUSHORT", "MIRIFULONG", "GUIDER1", "GUIDER2",
)
_DETECTOR_CODE = {d: i for i, d in enumerate(DETECTOR_ORDER, start=1)}
_SECOND_PASS_RULES = frozenset({"Asn_Lv2CoronAsRate"})
LEVEL3_ASN_TYPES = frozenset({"image3", "spec3", "tso3", "coron3", "ami3", "wfs-image3"})

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}):(\d{2}))?")
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})")


class NamingError(ValueError):
    """An association that cannot be named deterministically; the message says why."""


def version_stamp(header: Mapping[str, Any]) -> str:
    """``yyyymmddthhmmss`` of the exposure start, from DATE-OBS and TIME-OBS."""
    date = _DATE.fullmatch(str(header.get("DATE-OBS") or "").strip().split(".")[0])
    if not date:
        raise NamingError(f"DATE-OBS = {header.get('DATE-OBS')!r} is not an ISO date")
    y, m, d, hh, mm, ss = date.groups()
    if hh is None:
        time = _TIME.match(str(header.get("TIME-OBS") or "").strip())
        if not time:
            raise NamingError(f"TIME-OBS = {header.get('TIME-OBS')!r} is not hh:mm:ss")
        hh, mm, ss = time.groups()
    return f"{y}{m}{d}t{hh}{mm}{ss}"


def acid_for(header: Mapping[str, Any]) -> str:
    """The observation candidate (``o<observation>``): level-2 associations are
    built within an observation, as jwst's o-candidates are."""
    observation = HeaderView(header).text("OBSERVTN")
    if not observation.isdigit():
        raise NamingError(f"OBSERVTN = {observation!r} is not an observation number")
    return f"o{int(observation):03d}"


def level2_sequence(product_name: str, asn_rule: str) -> int:
    """NNNNN for a level-2 association: pass * 50000 + detector * 1000 + segment."""
    try:
        name = parse_exposure_name(product_name)
    except BadName as exc:
        raise NamingError(f"product name {product_name!r}: {exc}") from None
    code = _DETECTOR_CODE.get(name.detector.upper())
    if code is None:
        raise NamingError(f"detector {name.detector!r} has no association sequence code")
    second_pass = 1 if asn_rule in _SECOND_PASS_RULES else 0
    return second_pass * 50000 + code * 1000 + int(name.segment or 0)


def level3_sequence(product_name: str) -> int:
    """NNNNN for a level-3 association: 1-99999 from its product name (the
    candidate: acid, target, optical path), the same on every rebuild."""
    return 1 + zlib.crc32(product_name.encode()) % 99999


def association_filename(asn: Mapping[str, Any]) -> str:
    """The jwst-style file name of a level-2 or level-3 association built here."""
    try:
        program, acid, stamp = asn["program"], asn["asn_id"], asn["version_id"]
        asn_type, product = asn["asn_type"], asn["products"][0]["name"]
    except (KeyError, IndexError, TypeError) as exc:
        raise NamingError(f"association lacks {exc} needed for its name") from None
    if asn_type in LEVEL3_ASN_TYPES:
        sequence = level3_sequence(product)
    else:
        sequence = level2_sequence(product, asn.get("asn_rule", ""))
    return f"jw{program}-{acid}_{stamp}_{asn_type}_{sequence:05d}_asn.json".lower()
