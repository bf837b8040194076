"""What the planner keeps per exposure and per level-2 association, and what it emits."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from calstream.daemon.deciders.pointing_gate import is_planned
from calstream.steps.associations import Exposure, validate_level2
from calstream.steps.naming import ExposureName, parse_exposure_name
from calstream.steps.routing import HeaderView, Route
from calstream.topics import contract


@dataclass(frozen=True)
class Emit:
    """A message the planner wants published."""

    topic: str  # logical topic
    key: str
    message: contract.Message


@dataclass(slots=True)  # slots: one per exposure, kept for the planner's life
class Seen:
    """One exposure's latest successful detector1 product."""

    exposure: Exposure
    outputs: dict[str, dict[str, Any]]  # path -> {path, digest, size, suffix}
    event: dict[str, Any]
    since: float  # when its product event was emitted (Unix time)

    release: dict[str, Any] | None = None  # how a PLANNED hold on this content was released

    @property
    def digest(self) -> str:
        return self.event["inputs"][0]["digest"] if self.event["inputs"] else ""

    @property
    def provisional(self) -> bool:
        """Still held: PLANNED pointing and no release of this very content."""
        return is_planned(self.event.get("pointing_quality")) and self.release is None


@dataclass(slots=True)
class Candidate:
    """A science exposure's level-2 association, waiting or ordered."""

    science: str
    route: Route
    since: float
    sent: str | None = None  # work id of the last order sent
    sent_complete: bool = False  # whether that order had every companion
    waiting_for: dict[str, str] = field(default_factory=dict)
    number: int = 0  # its place among the planner's candidates, first seen first

    @property
    def open(self) -> bool:
        """Not ordered complete: never ordered, or ordered without every companion."""
        return self.sent is None or not self.sent_complete

    def failed(self, reason: str) -> bool:
        """Its decision raised (deciders/bulkhead.py): shown as what it waits
        for; True if the reason is new."""
        new = self.waiting_for.get("error") != reason
        self.waiting_for = {"error": reason}
        return new

    def decided(self) -> None:
        """Nothing to clear: every decision writes ``waiting_for`` anew."""


class OpenCandidates:
    """The open level-2 candidates (``Candidate.open``), kept as their orders
    are sent: what the planner's tick and its status read every second.

    Those read every candidate until session 30, three times a second (the
    tick, the gauges and /planner's view): 9-33 ms of each second at 100,000
    events of history, 129-351 ms at a million (bench/README.md). Read here they
    cost what is open, in the candidates' own order (``number``), which a
    scan of them all would have found them in.

    The tick decides only the ones never ordered (``waiting``): time can
    change their decision (a companion wait runs out). One ordered degraded
    stays open for good, and time alone changes nothing about it; what can
    is a companion arriving (``PlannerState._affected`` finds it by the
    index) or its visit's count (``visit_complete`` lets an awaited imprint
    or TA confirmation go), so an arrival in its visit and detector decides
    it again (``degraded_in``). Ticked every second, they cost ~20 us each.
    """

    def __init__(self, candidates: Iterable[Candidate] = ()):
        self._waiting: dict[str, Candidate] = {}  # never ordered
        self._degraded: dict[str, Candidate] = {}  # ordered without every companion
        self._by_visit: dict[tuple[str, str], set[str]] = {}  # (visit, detector) -> degraded
        for cand in candidates:
            self._keep(cand)

    def add(self, cand: Candidate) -> None:
        """A new candidate (open: nothing sent)."""
        self._keep(cand)

    def sent(self, cand: Candidate, work_id: str, complete: bool) -> None:
        """``cand``'s order is ``work_id``: where a candidate's ``sent`` changes."""
        self._drop(cand)
        cand.sent, cand.sent_complete = work_id, complete
        self._keep(cand)

    def waiting(self) -> list[Candidate]:
        """The never-ordered ones, in order."""
        self._refile()
        return sorted(self._waiting.values(), key=_number)

    def waiting_count(self) -> int:
        """How many never-ordered ones: the gauge's count, nothing built."""
        self._refile()
        return len(self._waiting)

    def waiting_by_science(self, limit: int) -> list[Candidate]:
        """The first ``limit`` never-ordered ones by science name, as status
        lists them, without sorting them all: read every second."""
        self._refile()
        return [self._waiting[s] for s in heapq.nsmallest(limit, self._waiting)]  # keys: names

    def degraded_in(self, name: ExposureName, besides: set[str]) -> list[Candidate]:
        """The degraded ones of ``name``'s visit and detector, ``besides`` aside."""
        found = self._by_visit.get((name.visit_id, name.detector), ())
        return sorted((self._degraded[s] for s in found if s not in besides), key=_number)

    def degraded_count(self) -> int:
        return len(self._degraded)

    def in_order(self) -> list[Candidate]:
        """Every open one, in order (not read every second)."""
        self._refile()
        return sorted([*self._waiting.values(), *self._degraded.values()], key=_number)

    def __len__(self) -> int:
        return len(self._waiting) + len(self._degraded)

    def _refile(self) -> None:
        """A waiting one ordered behind this set's back, filed as it is now."""
        for cand in [c for c in self._waiting.values() if c.sent is not None]:
            self._drop(cand)
            self._keep(cand)

    def _keep(self, cand: Candidate) -> None:
        if cand.sent is None:
            self._waiting[cand.science] = cand
        elif not cand.sent_complete:
            self._degraded[cand.science] = cand
            self._by_visit.setdefault(_visit_of(cand), set()).add(cand.science)

    def _drop(self, cand: Candidate) -> None:
        self._waiting.pop(cand.science, None)
        if self._degraded.pop(cand.science, None) is not None:
            visit = _visit_of(cand)
            self._by_visit[visit].discard(cand.science)
            if not self._by_visit[visit]:
                del self._by_visit[visit]


def _visit_of(cand: Candidate) -> tuple[str, str]:
    name = parse_exposure_name(cand.science)
    return name.visit_id, name.detector


def _number(cand: Candidate) -> int:
    return cand.number


def routed_exposure(exposure_id: str, header: dict[str, Any], products: dict[str, str],
                    route: Route) -> Exposure:
    """An Exposure whose route is the one the planner just computed: routing
    is the costliest header reading, so an exposure is routed once per event."""
    exposure = Exposure(exposure_id, header, products)
    # What the cached_properties would store, stored at once: a first read
    # of a functools.cached_property takes a lock, and every decision reads them.
    exposure.__dict__.update(route=route, name=parse_exposure_name(exposure_id),
                             keywords=HeaderView(header))
    return exposure


def redelivered(previous: dict[str, Any], event: dict[str, Any]) -> bool:
    """The same product event again: same id, work, outputs and header (only
    its emission time may differ)."""
    return (previous["event_id"] == event["event_id"]
            and previous["work_id"] == event["work_id"]
            and previous["outputs"] == event["outputs"]
            and previous["inputs"] == event["inputs"]
            and previous.get("pointing_quality") == event.get("pointing_quality")
            and previous["header"] == event["header"])


def check_emitted(emits: list[Emit]) -> None:
    """Raise (InvalidMessage, AssociationInvalid) if a message the planner is
    about to send breaks the contract: the deciders build orders unchecked,
    so each is checked once, when it is new, never when it is recognised."""
    for e in emits:
        contract.validate(e.message.type, e.message.body)
        if e.topic == "work.stage2":
            validate_level2(e.message["association"])
