"""A visit's completeness kept as counts, updated as exposures arrive.

``steps.completeness`` says what a visit's exposures tell of it, from the
exposures themselves; the planner asks at every decision, so here the same
answer is kept as counts per detector that each arrival updates (the cost
is the visit's detectors, not its exposures).
"""

from __future__ import annotations

from calstream.steps.associations.records import Exposure
from calstream.steps.completeness import _activity, _int, _Unit, expected_detectors


class DetectorTally:
    """One detector's share of a visit as counts (see ``_detector_status``):
    complete when every exposure NEXPOSUR promises has every segment its
    EXSEGTOT says (a segment is a file, not an exposure)."""

    def __init__(self) -> None:
        self.nexposur: int | None = None
        self.units: dict[tuple[str, int], _Unit] = {}
        self.numbers: dict[str, set[int]] = {}  # activity -> exposure numbers seen
        self.top: dict[str, int] = {}  # activity -> highest number seen
        self.positive: dict[str, int] = {}  # activity -> how many numbers are >= 1
        self.segtots: dict[int, int] = {}  # a unit's EXSEGTOT -> how many units have it
        self.missing_segments = self.seen = 0

    @staticmethod
    def _gaps(unit: _Unit) -> int:  # segments 1..segtot unseen, counted over the few seen
        seen, top = unit.segments, unit.segtot
        if seen and (min(seen) < 1 or max(seen) > top):
            return max(0, top - sum(1 for s in seen if 1 <= s <= top))
        return max(0, top - len(seen))

    def add(self, activity: str, number: int, segtot: int, segment: int) -> None:
        unit = self.units.get((activity, number))
        if unit is None:
            whole = segtot <= 1 and segment == 1  # the usual: an unsegmented exposure, new
            unit = self.units[(activity, number)] = _Unit(1, {1} if whole else set())
            self.numbers.setdefault(activity, set()).add(number)
            self.top[activity] = max(self.top.get(activity, number), number)
            self.positive[activity] = self.positive.get(activity, 0) + (number >= 1)
            self.segtots[1] = self.segtots.get(1, 0) + 1
            if whole:  # one unit of one segment, seen: nothing missing, nothing to replace
                self.seen += 1
                return
            self.missing_segments += 1  # an empty unit of one segment, replaced below
        self.missing_segments -= self._gaps(unit)
        self.seen -= len(unit.segments)
        self.segtots[unit.segtot] -= 1
        unit.segtot = max(unit.segtot, segtot)
        unit.segments.add(segment)
        self.segtots[unit.segtot] = self.segtots.get(unit.segtot, 0) + 1
        self.missing_segments += self._gaps(unit)
        self.seen += len(unit.segments)

    def note(self, e: Exposure) -> None:
        """One more file of this detector: its exposure (activity, number), its
        segment, and the NEXPOSUR its header promises."""
        n = _int(e.keywords, "NEXPOSUR")
        if n is not None:
            self.nexposur = max(self.nexposur or 0, n)
        self.add(_activity(e), int(e.name.exposure), _int(e.keywords, "EXSEGTOT") or 1,
                 int(e.name.segment) if e.name.segment else 1)

    def complete(self, visit_activities: int) -> bool:
        """What ``_detector_status(...).complete`` says, from the counts."""
        n = self.nexposur
        if n is None:
            return False
        absent = 0
        for activity, top in self.top.items():
            if len(self.top) == 1:
                top = max(top, n)
            # every number seen is <= top: the gaps below it are top - those >= 1
            absent += max(0, top - self.positive[activity])
        if not self.numbers and n and visit_activities == 1:
            absent = n
        absent = max(absent, n - len(self.units))
        kinds = [k for k, c in self.segtots.items() if c > 0]
        per_exposure = kinds[0] if len(kinds) == 1 else 1
        expected = sum(k * c for k, c in self.segtots.items()) \
            + max(0, n - len(self.units)) * per_exposure
        return self.missing_segments + absent * per_exposure == 0 and self.seen >= expected


class VisitTally:
    """One visit's completeness kept as counts, updated as exposures arrive.

    ``complete`` is what ``visit_status(exposures).visit_complete(visit)`` says of the
    same exposures, at the cost of the visit's detectors instead of its exposures: the
    planner asks it at every decision. ``exposures`` keeps the latest record of each,
    for ``visit_status`` to name what is missing when someone asks.
    """

    def __init__(self) -> None:
        self.exposures: dict[str, Exposure] = {}
        self._detectors: dict[str, DetectorTally] = {}
        self._activities: set[str] = set()
        self._complete: bool | None = None

    def add(self, e: Exposure) -> None:
        old = self.exposures.get(e.exposure_id)
        self.exposures[e.exposure_id] = e
        if old is not None:
            if old.header != e.header:  # a new header may say other things: count again
                self._detectors, self._activities = {}, set()
                for known in self.exposures.values():
                    self._count(known)
                self._complete = None
            return
        self._count(e)
        self._complete = None

    def _count(self, e: Exposure) -> None:
        activity = _activity(e)
        self._activities.add(activity)
        n = _int(e.keywords, "NEXPOSUR")
        for d in (*expected_detectors(e.header), e.name.detector):  # a new tally only when new
            tally = self._detectors.get(d) or self._detectors.setdefault(d, DetectorTally())
            if n is not None:
                tally.nexposur = max(tally.nexposur or 0, n)
        self._detectors[e.name.detector].add(
            activity, int(e.name.exposure), _int(e.keywords, "EXSEGTOT") or 1,
            int(e.name.segment) if e.name.segment else 1)

    @property
    def complete(self) -> bool:
        if self._complete is None:
            count = len(self._activities)
            self._complete = bool(self._detectors) and all(
                t.complete(count) for t in self._detectors.values())
        return self._complete
