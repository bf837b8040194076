"""Which exposures of a visit have arrived on each detector: NEXPOSUR's count
for level-2 completeness, kept as arrivals come, whatever the program's size.

NEXPOSUR counts exposures, and a segmented exposure is several files, so the
arrived exposure ids (segments apart) are tallied into exposures and
segments (steps/visit_tally.py, the count stage 3 keeps): counting files,
the segments of a time series made its visit look complete before its TA
confirmation came. The tally of a visit is made when it is first asked for
(a snapshot keeps only the ids), then kept up as arrivals come.
"""

from __future__ import annotations

from collections.abc import Callable

from calstream.steps.associations.records import Exposure
from calstream.steps.visit_tally import DetectorTally

Place = tuple[str, str]  # (visit id, detector)


class VisitCounts:
    def __init__(self) -> None:
        self.ids: dict[Place, set[str]] = {}  # what a snapshot keeps
        self._tallies: dict[Place, DetectorTally] = {}

    def arrived(self, exposure: Exposure, exposure_id: str, header_changed: bool) -> None:
        """``exposure`` arrived (again, with another header if ``header_changed``:
        its visit is tallied afresh when next asked)."""
        place = (exposure.name.visit_id, exposure.name.detector)
        self.ids.setdefault(place, set()).add(exposure_id)
        if place in self._tallies:
            if header_changed:
                del self._tallies[place]
            else:
                self._tallies[place].note(exposure)

    def complete(self, exposure: Exposure, arrived: Callable[[str], Exposure | None]) -> bool:
        """Every exposure NEXPOSUR promises for ``exposure``'s visit and
        detector has arrived, each with all its segments. ``arrived``: the
        exposure of an id, None if it is not (or no longer) known."""
        place = (exposure.name.visit_id, exposure.name.detector)
        tally = self._tallies.get(place)
        if tally is None:
            tally = self._tallies[place] = DetectorTally()
            for eid in sorted(self.ids.get(place, ())):
                if (known := arrived(eid)) is not None:
                    tally.note(known)
        return tally.complete(1)
