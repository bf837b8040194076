"""Level-3 candidates and their members: what stage-3 planning keeps (pure).

A candidate is keyed by ``steps.associations.level3.candidate_key`` (program,
acid, instrument, optical path, target, ...); ``keys_of`` finds every
candidate an exposure belongs to. deciders/level3_state.py decides when one
closes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from calstream.steps.associations import AssociationError, Exposure, Level3Key, candidate_key
from calstream.steps.keyword_memo import ByKeywordsRead
from calstream.steps.routing import HeaderView, Route


@dataclass
class Arrived:
    """An exposure as detector1 announced it (the unit of completeness)."""

    exposure: Exposure  # header only, no products
    since: float
    provisional: bool  # held: ENGQLPTG=PLANNED and not released


@dataclass
class Calibrated:
    """An exposure's latest stage-2 product."""

    exposure: Exposure  # header + stage-2 products by suffix
    outputs: dict[str, dict[str, Any]]  # path -> {path, digest, size, suffix}
    event: dict[str, Any]
    since: float


@dataclass
class Sent:
    version: int
    work_id: str
    signature: tuple  # sorted (role, digest) of the inputs
    degraded: str | None


@dataclass
class Candidate:
    key: Level3Key
    route: Route  # the science members' pass into stage 3
    opened: float
    changed: float  # last time a member arrived or was recalibrated
    members: set[str] = field(default_factory=set)
    sent: list[Sent] = field(default_factory=list)
    expected_by: str = "headers"  # "plan" | "headers"
    product_name: str | None = None
    problem: str | None = None  # why it cannot be built, if it cannot
    # Why its last decision raised (deciders/bulkhead.py). Not in snapshots:
    # a restored planner finds it again at its next decision.
    fault: str | None = None
    # Why it closed with nothing to make (no member has a stage-2 product):
    # no order, not open; None again once a decision finds it waiting.
    abandoned: str | None = None
    signature: tuple = ()  # the inputs it would combine now
    # Kept as members change, so a decision costs the same whatever the size:
    held: set[str] = field(default_factory=set)  # members with ENGQLPTG=PLANNED, not released
    uncalibrated: set[str] = field(default_factory=set)  # members without a stage-2 product
    # Uncalibrated members whose stage-2 order was sent: a backlog, waited
    # for up to stage3_stage2_wait rather than the quiet period.
    in_flight: set[str] = field(default_factory=set)
    visits: set[str] = field(default_factory=set)  # the members' visits
    digests: list[str] = field(default_factory=list)  # its members' stage-2 digests, sorted
    # What it waits for, in words: written out only when someone reads it
    # (status, metrics), from ``describe``; None = to be written out.
    _waiting: dict[str, str] | None = field(default_factory=dict, repr=False)
    _missing: list[str] | None = field(default_factory=list, repr=False)
    waiting: bool = False  # whether ``waiting_for`` is non-empty, known without writing it
    describe: Callable[[Candidate], tuple[dict[str, str], list[str]]] | None = field(
        default=None, repr=False, compare=False)

    def failed(self, reason: str) -> bool:
        """Its decision raised (deciders/bulkhead.py): shown by status as an
        error until a decision of it goes through; True if the reason is new."""
        new, self.fault = self.fault != reason, reason
        return new

    def decided(self) -> None:
        self.fault = None

    def described_later(self, waiting: bool, *, changed: bool = True) -> None:
        """Decided again: its words are written anew when next read.
        ``changed=False`` (a tick: only time passed, and the words depend on
        the members, visits and plans alone) keeps them, unless ``waiting``
        turned: a status read every second re-read every member's visit of
        every open candidate (bench/README.md, session 30)."""
        if changed or waiting != self.waiting:
            self.waiting = waiting
            self._waiting = self._missing = None

    def _describe(self) -> None:
        self._waiting, self._missing = self.describe(self)

    @property
    def waiting_for(self) -> dict[str, str]:
        if self._waiting is None:
            self._describe()
        return self._waiting

    @waiting_for.setter
    def waiting_for(self, value: dict[str, str]) -> None:
        if self._missing is None:
            self._describe()
        self._waiting, self.waiting = value, bool(value)

    @property
    def missing(self) -> list[str]:
        """Expected exposures that never arrived."""
        if self._missing is None:
            self._describe()
        return self._missing

    @property
    def label(self) -> str:
        return self.product_name or f"jw{self.key.program}-{self.key.acid}_{self.key.asn_type}"

    @property
    def is_open(self) -> bool:
        """Waiting for something, or settling: the last order is not what it would send now."""
        if self.abandoned is not None:
            return False
        waiting = self.waiting if self._waiting is None else bool(self._waiting)
        if waiting or not self.sent:
            return True
        # Read for every candidate once a second (tick, status): the same
        # object is the usual answer; two equal tuples of a member's digests
        # each cost a look at every member, and are made one object here.
        last = self.sent[-1].signature
        if last is self.signature:
            return False
        if last != self.signature:
            return True
        self.signature = last
        return False


_NORMED: dict[Level3Key, Level3Key] = {}  # key -> its normal form: a few per program


def _norm_target(key: Level3Key) -> Level3Key:
    # Pools write TARGETID 1, headers may carry "001": the same target.
    if key.target and key.target.isdigit():
        normed = _NORMED.get(key)
        if normed is None:
            if len(_NORMED) > 10_000:
                _NORMED.clear()
            normed = _NORMED[key] = dataclasses.replace(key, target=str(int(key.target)))
        return normed
    return key


class _NameFacts(NamedTuple):
    """What ``candidate_key`` reads of an exposure's name (not its exposure
    number: a visit's exposures share these)."""

    program: str
    observation: str
    visit_id: str
    detector: str
    activity: str


def keys_of(exposure: Exposure, acids: tuple[str, ...] = ()) -> list[tuple[Level3Key, Route]]:
    """Every level-3 candidate the exposure belongs to, with its pass into it.

    Remembered by the route, the acids, the name's facts and the header
    keywords ``candidate_key`` read: a visit's exposures differ in none of them.
    """
    r = exposure.route  # routed once per record (cached on it)
    if r is None:
        return []
    n = exposure.name
    facts = _NameFacts(n.program, n.observation, n.visit_id, n.detector, n.activity)
    try:
        return list(_KEYS(exposure.header, r, acids, facts))
    except AttributeError:  # a fact of the name not in _NameFacts: asked of the exposure
        return _keys_of(exposure, acids)


def _keys_read(header: Any, r: Route, acids: tuple[str, ...], facts: _NameFacts) -> tuple:
    # The exposure id only words errors, which _keys_of drops.
    exposure = Exposure(f"jw{facts.program}{facts.observation}", header)
    exposure.__dict__.update(route=r, name=facts, keywords=HeaderView(header))
    return tuple(_keys_of(exposure, acids))


_KEYS: ByKeywordsRead[tuple] = ByKeywordsRead(_keys_read, first="EXP_TYPE")


def _keys_of(exposure: Exposure, acids: tuple[str, ...]) -> list[tuple[Level3Key, Route]]:
    r = exposure.route
    if r is None:
        return []
    observation = f"o{exposure.name.observation}"
    found: list[tuple[Level3Key, Route]] = []
    for p in r.passes:
        if p.stage3 is None or p.stage2 is None:
            continue
        for acid in dict.fromkeys((observation, *acids)):
            try:
                key = candidate_key(p, exposure, acid=None if acid == observation else acid)
            except AssociationError:
                continue
            found.append((_norm_target(key), p))
    return found
