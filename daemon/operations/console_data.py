"""What the console shows, gathered once and shared by its pages.

Nothing is collected here that `calstream status` does not already collect:
the broker (holds, dead letters) and the daemons' endpoints (the planner's
/planner view) come from ``status.collect``; the products, their durations
and previews from the product store's provenance records. A snapshot is
rebuilt at most every ``ttl`` seconds, so a page over 10,000 exposures costs
one slice of an index, not a read of the store. Nothing is written.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.doers.product_store import LIVE, PROMOTIONS, ProductStore
from calstream.daemon.doers.promotion import current_namespace
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.dead_letter_redrives import RedriveReading, pending
from calstream.daemon.operations.holds_view import ledger_reads
from calstream.daemon.operations.status_collection import collect
from calstream.daemon.operations.status_summary import Status
from calstream.steps.failures import error_text
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.steps.regular_files import read_regular_text
from calstream.topics import contract

PER_STAGE = ("detector1", "stage2")  # one product per exposure; stage 3 combines them


def _exposure_of(name: str | None) -> tuple[str, str, str] | None:
    """(exposure id, program, observation) of a file name or exposure id."""
    if not name:
        return None
    try:
        parsed = parse_exposure_name(Path(name).name)
    except BadName:
        return None
    return parsed.exposure_id, parsed.program, parsed.observation


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return max(0.0, contract.parse_time(end).timestamp() - contract.parse_time(start).timestamp())


@dataclass
class Exposure:
    exposure_id: str
    program: str
    observation: str
    arrived_at: str | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> product event
    stage3: list[str] = field(default_factory=list)  # level-3 products it went into
    hold: dict[str, Any] | None = None
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def latency(self) -> float | None:
        """Arrival to its last per-exposure product (the last in time: as
        text, a stage-2 event stamped +02:00 read later than one of Z hours
        after it, the contract allowing any offset)."""
        last = max((e["emitted_at"] for e in self.stages.values()), default=None,
                   key=contract.parse_time)
        return _seconds_between(self.arrived_at, last)


@dataclass
class Observation:
    program: str
    observation: str
    exposures: dict[str, Exposure] = field(default_factory=dict)
    stage3: list[dict[str, Any]] = field(default_factory=list)  # level-3 product events
    missing: dict[str, dict[str, Any]] = field(default_factory=dict)  # exposure -> since, by
    waiting: list[dict[str, Any]] = field(default_factory=list)  # open associations
    dead_letters: list[dict[str, Any]] = field(default_factory=list)  # not of one exposure

    def exposure(self, exposure_id: str) -> Exposure:
        if exposure_id not in self.exposures:
            self.exposures[exposure_id] = Exposure(exposure_id, self.program, self.observation)
        return self.exposures[exposure_id]

    def letters(self) -> list[dict[str, Any]]:
        """Every dead letter of the observation: its exposures', then its own."""
        return [d for e in self.exposures.values() for d in e.dead_letters] + self.dead_letters

    def ordered(self) -> list[Exposure]:
        """By arrival in time (one not known last), as text its offset's digits."""
        return sorted(self.exposures.values(), key=lambda e: (
            e.arrived_at is None, contract.parse_time(e.arrived_at).timestamp()
            if e.arrived_at else 0.0, e.exposure_id))

    def counts(self) -> dict[str, int]:
        rows, letters = self.exposures.values(), self.letters()
        return {"exposures": len(rows),
                **{s: sum(1 for e in rows if s in e.stages) for s in PER_STAGE},
                "stage3": len(self.stage3), "held": sum(1 for e in rows if e.hold),
                # What needs someone: a redriven dead letter is handled, counted apart.
                "dead_letters": len(pending(letters)),
                "redriven": len(letters) - len(pending(letters)),
                "missing": len(self.missing), "waiting": len(self.waiting)}


@dataclass
class Snapshot:
    at: float
    namespace: str
    observations: dict[tuple[str, str], Observation]
    status: Status | None
    namespaces: list[str]
    current: str | None  # None: <products>/current is no link promote makes
    promotions: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]  # every recent one, newest last
    error: str | None = None
    store_error: str | None = None  # the product store is not there: nothing to show is no news
    left_out: int = 0  # provenance records whose event is no product event (product_events)

    def observation(self, program: str, observation: str) -> Observation | None:
        return self.observations.get((program, observation))


def _observation(index: dict, program: str, observation: str) -> Observation:
    key = (program, observation)
    if key not in index:
        index[key] = Observation(program, observation)
    return index[key]


def product_events(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The records whose event is a product event the contract accepts, and
    how many are not. A record in the store is a file, untrusted like any:
    the store takes one whose event is an object with its files listed
    (provenance_records.py), and a program that was no text (a list, a
    number beside the others' texts), a stage-3 event without its product
    name or a preview without its path raised out of every console page."""
    usable = [r for r in records if contract.is_valid("product", r["event"])]
    return usable, len(records) - len(usable)


def member_names(event: dict[str, Any]) -> list[str]:
    """The file names of a stage-3 event's association members, those that
    are text (the association is no field of the contract's: any shape)."""
    association = event.get("association")
    members = association.get("members") if isinstance(association, dict) else None
    if not isinstance(members, list):
        return []
    return [m["expname"] for m in members
            if isinstance(m, dict) and isinstance(m.get("expname"), str)]


def index_records(records: list[dict[str, Any]], index: dict) -> None:
    """Product events from the store into exposures' timelines."""
    for record in records:
        event = record.get("event") or {}
        obs = _observation(index, event.get("program", "?"), event.get("observation", "?"))
        stage = event.get("stage")
        if stage in ("dark", "guider"):  # made in detector1's place: its column
            stage = "detector1"
        if stage in PER_STAGE:
            found = _exposure_of(event.get("exposure_id") or event.get("product_name"))
            exp = obs.exposure(found[0] if found else event.get("product_name", "?"))
            exp.stages[stage] = event
            exp.arrived_at = exp.arrived_at or event.get("arrived_at")
        elif stage == "stage3":
            obs.stage3.append(event)
            for member in member_names(event):
                found = _exposure_of(member)
                if found:
                    exp = obs.exposure(found[0])
                    if event["product_name"] not in exp.stage3:
                        exp.stage3.append(event["product_name"])


def index_broker(status: Status, namespace: str, index: dict) -> None:
    """Holds, dead letters and what the planner waits for."""
    for hold in status.broker.holds or []:  # None: the holds topic unread (its error is shown)
        found = _exposure_of(hold.get("exposure_id"))
        if found:
            _observation(index, found[1], found[2]).exposure(found[0]).hold = hold
    for letter in status.broker.dead_letters:
        found = _exposure_of(letter.get("exposure_id") or letter.get("path"))
        if found:
            _observation(index, found[1], found[2]).exposure(found[0]).dead_letters.append(letter)
    index_planner((status.planner or {}).get("view"), namespace, index)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _seconds(value: Any) -> float | None:
    return value if type(value) in (int, float) and math.isfinite(value) else None


def _reasons(why: Any) -> dict[str, Any]:
    return why if isinstance(why, dict) else {"waits for": why} if why else {}


def index_planner(view: Any, namespace: str, index: dict) -> None:
    """What the planner waits for, from its /planner view. What a daemon
    serves is read as untrusted, as `calstream status` reads it (a daemon of
    another calstream version, or whatever answers at its address): an
    entry of a shape not known here is left out, or shown as text. A
    missing exposure's time that was no number, or a candidate's name that
    was no text, raised out of every page of its observation, or lost the
    whole view under an error blamed on the broker."""
    ns = _object(_object(_object(view).get("namespaces")).get(namespace))
    stage3 = _object(ns.get("stage3"))
    for eid, missing in _object(stage3.get("missing")).items():
        found = _exposure_of(eid)
        if found and isinstance(missing, dict):
            _observation(index, found[1], found[2]).missing[found[0]] = {
                "since": _seconds(missing.get("since")),
                "candidates": [str(c) for c in _listed(missing.get("candidates"))]}
    for science, why in _object(ns.get("stage2_waiting")).items():
        found = _exposure_of(science)
        if found:
            _observation(index, found[1], found[2]).waiting.append(
                {"association": f"stage 2 of {science}", "waiting_for": _reasons(why)})
    for cand in map(_object, _listed(stage3.get("candidates"))):
        name = cand.get("candidate")
        if not isinstance(name, str):
            continue
        members = [_exposure_of(m) for m in _listed(cand.get("missing")) if isinstance(m, str)]
        where = next((m for m in members if m), None) or _candidate_observation(name)
        quiet = _seconds(cand.get("quiet_for"))
        if where:
            _observation(index, where[1], where[2]).waiting.append(
                {"association": f"stage 3 {name} ({cand.get('asn_type', '')}, "
                                f"{cand.get('members', '?')} member(s))",
                 "waiting_for": _reasons(cand.get("waiting_for")) or
                 {"settling": f"{quiet or 0:.0f}s quiet"}})
    for cand in map(_object, _listed(stage3.get("abandoned"))):  # closed, nothing to make
        name = cand.get("candidate")
        where = _candidate_observation(name) if isinstance(name, str) else None
        if where:
            _observation(index, where[1], where[2]).waiting.append(
                {"association": f"stage 3 {name} (abandoned, "
                                f"{cand.get('members', '?')} member(s))",
                 "waiting_for": {"abandoned": cand.get("reason") or ""}})


def _candidate_observation(candidate: str) -> tuple[str, str, str] | None:
    """A level-3 candidate's name starts jw<program>-o<observation>."""
    if candidate.startswith("jw") and candidate[7:9] == "-o" and candidate[2:7].isdigit():
        return candidate, candidate[2:7], candidate[9:12]
    return None


def index_product_dead_letters(letters: list[dict[str, Any]],
                               index: dict[tuple[str, str], Observation]) -> None:
    """Dead letters that name no exposure, on their product's observation.

    A stage-3 work order's dead letter has no exposure id; its original
    record's key is the order's product name (``jw<program>-o<observation>...``).
    A watcher's ``bad_file`` has no original record at all (``original`` is
    null), and a dead letter is untrusted: any shape is skipped, never raised on.
    """
    for letter in letters:
        if _exposure_of(letter.get("exposure_id") or letter.get("path")):
            continue  # placed with its exposure (index_broker)
        original = letter.get("original")
        key = original.get("key") if isinstance(original, dict) else None
        where = _candidate_observation(key) if isinstance(key, str) else None
        if where:
            _observation(index, where[1], where[2]).dead_letters.append(letter)


def _promotions(store: ProductStore) -> list[dict[str, Any]]:
    import json

    out = []
    for path in sorted((store.top / PROMOTIONS).glob("*.json")):
        try:
            doc = json.loads(read_regular_text(path))
        except (OSError, ValueError, RecursionError):
            continue
        # A file is untrusted: only a promotion message's body, as promote
        # writes it (a promoted_at that is no text broke the front page).
        if not isinstance(doc, dict) or not contract.is_valid("promotion", doc):
            continue
        out.append({k: doc.get(k) for k in ("namespace", "previous", "promoted_at", "reason",
                                            "by", "records")})
    return out


REDRIVES_BUDGET = 5.0  # seconds a rebuild reads redrive marks; within collect's 10 s


class ConsoleData:
    """Snapshots per namespace, rebuilt when older than ``ttl`` seconds."""

    def __init__(self, cfg: Config, metrics_urls: Callable[[], list[str]], *,
                 ttl: float = 5.0, dead_letters: int = 500,
                 monotonic: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        # The snapshots' ages: a wall clock stepped back would keep one for the step.
        self.monotonic = monotonic
        self._built_at: dict[str, float] = {}
        self.store = ProductStore(cfg.products, moved_from=cfg.products_moved_from)
        self.metrics_urls = metrics_urls
        self.ttl = ttl
        self.dead_letters = dead_letters
        self._cache: dict[str, Snapshot] = {}
        self._records: dict[str, dict] = {}  # per namespace: ProductStore.records' memo
        # The redrive marks read so far: a rebuild reads only what the
        # originals' topics got since (the lock keeps one rebuild at a time).
        self.redrives = RedriveReading(budget=REDRIVES_BUDGET)
        self.ledger_reads = ledger_reads()  # the planner's ledger's, timed (holds_view.py)
        self._lock = threading.Lock()

    def snapshot(self, namespace: str = LIVE) -> Snapshot:
        with self._lock:  # one rebuild at a time; the other requests wait for it
            snap, now = self._cache.get(namespace), self.monotonic()
            if snap is None or now - self._built_at[namespace] > self.ttl:
                snap = self._cache[namespace] = self._build(namespace)
                self._built_at[namespace] = now
            return snap

    def _build(self, namespace: str) -> Snapshot:
        index: dict[tuple[str, str], Observation] = {}
        tree = self.store.for_namespace(namespace)
        memo = self._records.setdefault(namespace, {})  # the records read so far
        records, left_out = product_events(tree.records(memo=memo) if tree.root.is_dir() else [])
        index_records(records, index)
        status, error = None, None
        try:
            status = anyio.run(lambda: collect(self.cfg, self.metrics_urls(),
                                               dead_letters=self.dead_letters, products=0,
                                               timeout=10.0, redrives=self.redrives,
                                               ledger_reads=self.ledger_reads))
            index_broker(status, namespace, index)
            error = status.broker.error
        except Exception as exc:  # noqa: BLE001 - the store alone is still worth showing
            error = error_text(exc)
        letters = list(status.broker.dead_letters) if status else []
        index_product_dead_letters(letters, index)
        return Snapshot(time.time(), namespace, dict(sorted(index.items())), status,
                        [LIVE, *self.store.namespaces()], current_namespace(self.store),
                        _promotions(self.store), letters, error, self.store_missing(), left_out)

    def store_missing(self) -> str | None:
        # A typo in --work-dir or --products (or a daemon never started
        # there) read as an empty deployment: "none" everywhere.
        if self.store.top.is_dir():
            return None
        return (f"product store {self.store.top} does not exist: no daemon has run with it; "
                "check --work-dir / --products (or --config)")
