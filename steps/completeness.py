"""Visit completeness from arrival headers: which exposures are still to come.

What headers can tell
---------------------
* ``NEXPOSUR`` is the number of exposures planned in the visit, per detector
  (jwst: meta.visit.total_exposures; checked against real pools in the
  notes). A segmented exposure arrives as ``EXSEGTOT`` files (``-segNNN``),
  so a detector's visit is complete when every one of its NEXPOSUR exposures
  has all its segments: expected = NEXPOSUR × EXSEGTOT when the exposures
  are segmented alike.
* No keyword gives the number of detectors read: ``expected_detectors`` derives it
  from INSTRUME, EXP_TYPE, MODULE, SUBARRAY and APERNAME (remembered by them).
* Which exposures are missing can be named from the EXPOSURE numbering (1..NEXPOSUR)
  when the visit's exposures on a detector come from one activity; across several
  activities numbering restarts, so only gaps below the highest number seen in an
  activity are named and the rest is a count. A seen exposure's missing segment is always named.

What headers cannot tell
------------------------
* How many visits an observation has, or which observations an APT
  candidate (``c1NNN``: PSF references, dedicated backgrounds, mosaics)
  spans: observation and cross-observation level-3 candidates need a plan
  (a jwst pool file or a manifest of expected exposures) or a quiet period.
  This module deliberately has no notion of either: the planner layers
  them on top (the seam: a plan supplies expected (visit, detector,
  exposure) units and replaces ``expected``/``missing`` for its candidates;
  without one, a candidate whose visits are all complete still closes only
  after the quiet period, since another visit may come).
* A detector read for only part of the visit (a target acquisition on its
  own subarray, a parallel instrument) may never reach NEXPOSUR; NEXPOSUR
  does not say which exposures use which detectors. Such a detector stays
  incomplete and the quiet period closes it.
* Simultaneous readouts with another EXP_TYPE (NIRCam TSGRISM's short-wave
  NRC_TSIMAGE detector, DHS stripes) are not announced by the grism header:
  subarray exposures expect only their own detector.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from calstream.steps.associations.records import Exposure
from calstream.steps.keyword_memo import ByKeywordsRead
from calstream.steps.routing import HeaderView, RoutingError, nirspec_lit_detectors

# Subarrays NIRCam reads on every detector of the module(s), both channels.
_NIRCAM_MODULE_SUBARRAYS = frozenset({"FULL", "SUB160", "SUB320", "SUB640"})
_NIRCAM_MODULE_EXP_TYPES = frozenset({"NRC_IMAGE", "NRC_WFSS", "NRC_GRISM", "NRC_CORON",
                                      "NRC_FLAT", "NRC_DARK", "NRC_LED", "NRC_FOCUS"})
_NIRSPEC_FULL = frozenset({"FULL", "ALLSLITS"})
_MIRI_IFU = frozenset({"MIR_MRS", "MIR_DARKMRS", "MIR_FLATMRS", "MIR_FLATMRS-EXT"})
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}):(\d{2}(?:\.\d*)?))?")
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2}(?:\.\d*)?)")


def _nircam_modules(h: HeaderView) -> tuple[str, ...]:
    aperture = h.text("APERNAME")
    if aperture.startswith("NRCALL"):
        return ("A", "B")
    module = h.text("MODULE")
    if module in ("A", "B"):
        return (module,)
    detector = h.text("DETECTOR")
    return (detector[3],) if detector.startswith("NRC") and len(detector) > 3 else ()


def _expected_detectors(header: Mapping[str, Any]) -> frozenset[str]:
    """The detectors (lower case) an exposure with this header is read on.

    NIRCam: full frame and the full-module subarrays (SUB160/320/640) of
    imaging, WFSS and coronagraphy read all five detectors of the module
    (both when APERNAME is NRCALL_*); other subarrays only this detector.
    NIRSpec: full frame (FULL, ALLSLITS) both NRS1 and NRS2; subarrays the
    detectors the slit's spectrum reaches (``nirspec_lit_detectors``).
    MIRI: MRS both IFU detectors, else MIRIMAGE. NIRISS: NIS. FGS: its
    guider (DETECTOR). The header's own DETECTOR is always included.
    """
    h = HeaderView(header)
    instrument, exp_type = h.text("INSTRUME"), h.text("EXP_TYPE")
    subarray, detector = h.text("SUBARRAY"), h.text("DETECTOR")
    found: set[str] = {detector} if detector else set()
    if instrument == "NIRCAM":
        if exp_type in _NIRCAM_MODULE_EXP_TYPES and subarray in _NIRCAM_MODULE_SUBARRAYS:
            for m in _nircam_modules(h):
                found |= {f"NRC{m}{i}" for i in (1, 2, 3, 4)} | {f"NRC{m}LONG"}
    elif instrument == "NIRSPEC":
        if subarray in _NIRSPEC_FULL:
            found |= {"NRS1", "NRS2"}
        else:
            found |= nirspec_lit_detectors(h.text("GRATING"), h.text("FILTER"), h.text("FXD_SLIT"))
    elif instrument == "MIRI":
        found |= {"MIRIFUSHORT", "MIRIFULONG"} if exp_type in _MIRI_IFU else set()
        if not found:
            found.add("MIRIMAGE")
    elif instrument == "NIRISS":
        found.add("NIS")
    elif instrument == "FGS" and not found:
        found.add("GUIDER1")
    return frozenset(d.lower() for d in found)


expected_detectors = ByKeywordsRead(_expected_detectors, first="INSTRUME")


@dataclass(frozen=True)
class DetectorStatus:
    """One detector's share of one visit.

    ``expected``/``seen``/``missing_count`` count files: exposures times
    their segments (an absent exposure counts as many segments as the seen
    ones have). ``missing`` names absent exposures and segments as
    ``<gg><s><aa>_<eeeee>[-segNNN]`` where the numbering allows.
    ``since``: the earliest arrival in the visit (epoch seconds).
    """

    visit: str  # jw<ppppp><ooo><vvv>
    detector: str  # lower case
    expected_exposures: int | None  # NEXPOSUR; None when no header gave it
    expected: int | None
    seen: int
    missing: tuple[str, ...]
    missing_count: int
    since: float | None

    @property
    def complete(self) -> bool:
        return self.expected is not None and self.missing_count == 0 and self.seen >= self.expected


@dataclass(frozen=True)
class VisitStatus:
    """Completeness of every (visit, detector) the exposures make known."""

    detectors: Mapping[tuple[str, str], DetectorStatus]

    @property
    def visits(self) -> tuple[str, ...]:
        return tuple(sorted({v for v, _ in self.detectors}))

    def of_visit(self, visit: str) -> tuple[DetectorStatus, ...]:
        return tuple(s for (v, _), s in sorted(self.detectors.items()) if v == visit)

    def visit_complete(self, visit: str) -> bool:
        statuses = self.of_visit(visit)
        return bool(statuses) and all(s.complete for s in statuses)

    @property
    def complete(self) -> bool:
        return bool(self.detectors) and all(s.complete for s in self.detectors.values())

    @property
    def incomplete(self) -> tuple[DetectorStatus, ...]:
        return tuple(s for _, s in sorted(self.detectors.items()) if not s.complete)

    @property
    def missing_count(self) -> int:
        return sum(s.missing_count for s in self.detectors.values())


def _int(h: HeaderView, key: str) -> int | None:
    try:
        return h.integer(key)
    except RoutingError:
        return None  # a garbled keyword on one exposure must not stop the others


def exposure_start(header: Mapping[str, Any]) -> float | None:
    """DATE-OBS + TIME-OBS as UTC epoch seconds, or None."""
    h = HeaderView(header)
    date = _DATE.fullmatch(str(h.raw("DATE-OBS") or "").strip())
    if not date:
        return None
    y, mo, d, hh, mm, ss = date.groups()
    if hh is None:
        time = _TIME.match(str(h.raw("TIME-OBS") or "").strip())
        if not time:
            return None
        hh, mm, ss = time.groups()
    whole = calendar.timegm((int(y), int(mo), int(d), int(hh), int(mm), 0, 0, 0, 0))
    return whole + float(ss)


def _activity(e: Exposure) -> str:
    n = e.name
    return f"{n.visit_group}{n.sequence}{n.activity}"


@dataclass
class _Unit:
    """What is known of one exposure (activity + number) on one detector."""

    segtot: int
    segments: set[int]


def visit_status(
    exposures: Iterable[Exposure], *, arrivals: Mapping[str, float] | None = None
) -> VisitStatus:
    """Completeness per (visit, detector) of the exposures seen so far.

    ``arrivals`` maps exposure id to arrival time (epoch seconds); without
    it ``since`` is the earliest exposure start (DATE-OBS/TIME-OBS).
    Duplicates (the same file seen twice) count once.
    """
    by_visit: dict[str, list[Exposure]] = {}
    for e in exposures:
        by_visit.setdefault(e.name.visit_id, []).append(e)
    result: dict[tuple[str, str], DetectorStatus] = {}
    for visit, seen in by_visit.items():
        times = [
            (arrivals or {}).get(e.exposure_id) if arrivals is not None
            else exposure_start(e.header)
            for e in seen
        ]
        known_times = [t for t in times if t is not None]
        since = min(known_times) if known_times else None
        detectors: set[str] = set()
        nexposur: dict[str, int] = {}
        for e in seen:
            h = e.keywords
            for d in expected_detectors(e.header) | {e.name.detector}:
                detectors.add(d)
                n = _int(h, "NEXPOSUR")
                if n is not None:
                    nexposur[d] = max(nexposur.get(d, 0), n)
        activities = sorted({_activity(e) for e in seen})
        for d in sorted(detectors):
            on_detector = [e for e in seen if e.name.detector == d]
            result[(visit, d)] = _detector_status(
                visit, d, on_detector, nexposur.get(d), since, activities
            )
    return VisitStatus(result)


def _detector_status(
    visit: str,
    detector: str,
    seen: list[Exposure],
    nexposur: int | None,
    since: float | None,
    visit_activities: list[str],
) -> DetectorStatus:
    units: dict[tuple[str, int], _Unit] = {}  # (gg s aa, exposure number)
    for e in seen:
        n = e.name
        unit = units.setdefault((_activity(e), int(n.exposure)), _Unit(1, set()))
        segtot = _int(e.keywords, "EXSEGTOT") or 1
        unit.segtot = max(unit.segtot, segtot)
        unit.segments.add(int(n.segment) if n.segment else 1)

    missing: list[str] = []
    for (activity, number), unit in sorted(units.items()):
        for s in range(1, unit.segtot + 1):
            if s not in unit.segments:
                missing.append(f"{activity}_{number:05d}-seg{s:03d}")
    missing_segments = len(missing)

    activities = sorted({a for a, _ in units})
    absent_named: list[str] = []
    for activity in activities:
        numbers = {n for a, n in units if a == activity}
        top = max(numbers)
        if len(activities) == 1 and nexposur is not None:
            top = max(top, nexposur)
        absent_named += [f"{activity}_{n:05d}" for n in range(1, top + 1) if n not in numbers]
    if not activities and nexposur and len(visit_activities) == 1:
        # Announced by another detector's header, nothing seen here yet.
        absent_named = [f"{visit_activities[0]}_{n:05d}" for n in range(1, nexposur + 1)]

    absent_count = len(absent_named)
    if nexposur is not None:
        absent_count = max(absent_count, nexposur - len(units))
    segtots = {u.segtot for u in units.values()}
    per_exposure = segtots.pop() if len(segtots) == 1 else 1
    expected = None
    if nexposur is not None:
        # Seen exposures count their own segments; absent ones as the others do.
        expected = sum(u.segtot for u in units.values()) + max(0, nexposur - len(units)) * per_exposure
    seen_count = sum(len(u.segments) for u in units.values())
    return DetectorStatus(
        visit=visit,
        detector=detector,
        expected_exposures=nexposur,
        expected=expected,
        seen=seen_count,
        missing=tuple(missing + absent_named),
        missing_count=missing_segments + absent_count * per_exposure,
        since=since,
    )
