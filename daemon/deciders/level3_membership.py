"""Which level-3 candidates each exposure is a member of, kept as exposures arrive (pure).

Kept apart from ``level3_state`` (which decides *when* a candidate closes):
this is the bookkeeping those decisions read, updated one exposure at a time
so that no decision reads a whole visit or program -- each exposure's
candidates (its keys, once per header), each candidate's members, held,
uncalibrated, in flight (ordered, uncalibrated) and stage-2 digests, each
visit's members and its tally of NEXPOSUR. ``Level3Membership`` is a mixin of ``Level3State``, whose
``__init__`` makes the maps it keeps.
"""

from __future__ import annotations

from bisect import insort
from functools import partial

from calstream.daemon.deciders.level3_candidates import (
    Arrived,
    Calibrated,
    Candidate,
    keys_of,
)
from calstream.daemon.deciders.level3_status import describe
from calstream.steps.associations import Exposure, Level3Key
from calstream.steps.visit_tally import VisitTally


class Level3Membership:
    def _tally(self, visit: str) -> VisitTally:
        """A visit's tally, counted when first needed (a snapshot keeps only
        which visits are incomplete)."""
        tally = self._visits.get(visit)
        if tally is None:
            tally = self._visits[visit] = VisitTally()
            for eid in self._visit_members.get(visit, ()):
                tally.add(self.arrived[eid].exposure)
        return tally

    def _arrive(self, arrived: Arrived) -> None:
        eid = arrived.exposure.exposure_id
        self.arrived[eid] = arrived
        visit = arrived.exposure.name.visit_id
        tally = self._tally(visit)
        self._visit_members.setdefault(visit, set()).add(eid)
        tally.add(arrived.exposure)
        # Counted again when a decision asks (the visit's twenty arrivals in
        # a row are one count, not twenty).
        self._unsettled_visits.add(visit)

    @property
    def _incomplete_visits(self) -> set[str]:
        """Visits whose headers say more will come (as of every arrival so far)."""
        for visit in self._unsettled_visits:
            if self._tally(visit).complete:
                self._incomplete_set.discard(visit)
            else:
                self._incomplete_set.add(visit)
        self._unsettled_visits.clear()
        return self._incomplete_set

    @_incomplete_visits.setter
    def _incomplete_visits(self, visits: set[str]) -> None:
        self._incomplete_set, self._unsettled_visits = visits, set()

    def _new_candidate(self, key: Level3Key, r, now: float, changed: float | None = None):
        self.candidates[key] = Candidate(key, r, now, now if changed is None else changed,
                                         describe=partial(describe, self))
        return self.candidates[key]

    def _add_member(self, cand: Candidate, eid: str) -> None:
        cand.members.add(eid)
        a = self.arrived.get(eid)
        if a is not None and a.provisional:
            cand.held.add(eid)
        if eid not in self.calibrated:
            cand.uncalibrated.add(eid)
            if self._in_flight(eid):
                cand.in_flight.add(eid)
        for digest in self._stage2_digests(eid):
            insort(cand.digests, digest)
        self._signatures.pop(cand.key, None)
        self._keys_of_member.setdefault(eid, set()).add(cand.key)
        if a is not None:
            visit = a.exposure.name.visit_id
            cand.visits.add(visit)
            self._keys_by_visit.setdefault(visit, set()).add(cand.key)

    def _keys(self, exposure: Exposure):
        """keys_of, once per exposure and header (a redelivery asks again)."""
        acids = self._planned.get(exposure.exposure_id, ())
        cached = self._keys_cache.get(exposure.exposure_id)
        if cached is not None and cached[1] == acids and (
                cached[0] is exposure.header or cached[0] == exposure.header):
            return cached[2]
        found = keys_of(exposure, acids)
        self._keys_cache[exposure.exposure_id] = (exposure.header, acids, found)
        return found

    def _program_pool(self, program: str) -> list[Exposure]:
        """The program's exposures seen so far: without a TARGETID, targets are
        numbered over them as asn_make_pool numbers them over the program's files.
        Asked when a candidate is first named and when it is ordered, not per event."""
        return [self._with_plan(self.arrived[e].exposure)
                for visit, ids in self._visit_members.items() if visit[2:7] == program
                for e in sorted(ids)]

    def _with_plan(self, exposure: Exposure) -> Exposure:
        """The exposure with the keywords only its plan knows (TARGETID, ...):
        its own header wins, the plan fills the gaps, as a pool does for jwst."""
        planned = self._plan_headers.get(exposure.exposure_id)
        if not planned:
            return exposure
        return Exposure(exposure.exposure_id, {**planned, **exposure.header}, exposure.products)

    def _index(self, exposure: Exposure, now: float) -> set[Level3Key]:
        touched = set()
        exposure = self._with_plan(exposure)
        for key, r in self._keys(exposure):
            cand = self.candidates.get(key)
            if cand is None:
                cand = self._new_candidate(key, r, now)
            if exposure.exposure_id not in cand.members:
                self._add_member(cand, exposure.exposure_id)
                cand.changed = max(cand.changed, now)
            if r.role == "science":
                cand.route = r
            touched.add(key)
        return touched

    def _stage2_digests(self, eid: str, calibrated: Calibrated | None = None) -> list[str]:
        c = calibrated or self.calibrated.get(eid)
        if c is None:
            return []
        return [o["digest"] for o in c.outputs.values()
                if o["suffix"] in ("cal", "calints", "x1d", "x1dints")]
