"""Which records a replay republishes, and what it can say about coverage: pure.

A replay reads its source topic up to "now" (``doers/replay_source.py``); this
module decides, with no broker and no clock, which of those records to
republish (matching the selection, live, the latest per item), which
partitions have lost part of the requested range to retention, what each
partition contributes, and the message each chosen record becomes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from calstream.daemon.deciders import command_times
from calstream.daemon.deciders.admission import path_text_problem
from calstream.daemon.deciders.event_checks import inside
from calstream.daemon.deciders.replay_packed import unpacked
from calstream.daemon.stages import STAGES
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.steps.provenance import work_id
from calstream.topics import contract

# `calstream replay --from X`: (source topic, target topic, message type),
# logical names: a stage's live topic into its replay topic (daemon/stages.py).
SOURCES = {st.replay_from: (st.live_topic, st.replay_topic, st.message) for st in STAGES}


class BadSelection(ValueError):
    """A selection that cannot be right (a time that is not one, an empty range,
    a program that is not 5 digits)."""


# What each selection value must look like (the product schema's grammar):
# a value of another shape matches nothing, and "nothing matched" hid the slip.
_GRAMMAR = {"programs": ("--program", re.compile(r"[0-9]{5}"), "5 digits, e.g. 01234"),
            "observations": ("--observation", re.compile(r"[0-9]{3}"), "3 digits, e.g. 001"),
            "visits": ("--visit", re.compile(r"[0-9]{3}"), "3 digits, e.g. 001"),
            "exposures": ("--exposure", re.compile(r"jw[0-9a-z][0-9a-z_.+-]{0,199}"),
                          "an exposure id or product name, e.g. jw01234001001_02101_00001_nrcb1")}


def parse_when(text: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """RFC 3339, a date (midnight UTC), or an age (2h): command_times's."""
    if text is None:
        return None
    try:
        return command_times.parse_when(text, now)
    except command_times.NotATime as exc:
        raise BadSelection(str(exc)) from None


@dataclass
class Selection:
    since: dt.datetime | None = None  # arrival time, inclusive
    until: dt.datetime | None = None  # exclusive
    programs: set[str] = field(default_factory=set)
    observations: set[str] = field(default_factory=set)
    visits: set[str] = field(default_factory=set)
    exposures: set[str] = field(default_factory=set)
    instruments: set[str] = field(default_factory=set)
    exp_types: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.instruments = {i.upper() for i in self.instruments}
        self.exp_types = {e.upper() for e in self.exp_types}
        for key, (flag, grammar, shape) in _GRAMMAR.items():
            for value in getattr(self, key):
                # Exposures are matched without case (matches()), so judged so.
                if not isinstance(value, str) or not grammar.fullmatch(value.lower()):
                    raise BadSelection(f"{flag} {value!r} is not {shape}")
        if self.since and self.until and self.until <= self.since:
            raise BadSelection("--until must be later than --since")

    def matches(self, facts: dict[str, Any], when: dt.datetime | None) -> bool:
        if self.since and (when is None or when < self.since):
            return False
        if self.until and (when is None or when >= self.until):
            return False
        checks = ((self.programs, "program"), (self.observations, "observation"),
                  (self.visits, "visit"), (self.exposures, "exposure_id"),
                  (self.instruments, "instrument"), (self.exp_types, "exp_type"))
        for wanted, key in checks:
            value = facts.get(key)
            if wanted and (value is None or str(value).upper() not in
                           {w.upper() for w in wanted}):
                return False
        return True

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.since:
            out["since"] = contract.iso(self.since)
        if self.until:
            out["until"] = contract.iso(self.until)
        for key in ("programs", "observations", "visits", "exposures", "instruments",
                    "exp_types"):
            if getattr(self, key):
                out[key] = sorted(getattr(self, key))
        return out


def facts_of(message: dict[str, Any]) -> tuple[str, dict[str, Any], dt.datetime | None]:
    """(item name, facts to select on, arrival time) of an arrival or a work order."""
    if message.get("schema") == "calstream.arrival":
        name = message["exposure_id"]
        header = message.get("header", {})
        facts = {"exposure_id": name, "instrument": header.get("INSTRUME"),
                 "exp_type": header.get("EXP_TYPE")}
        when = message.get("detected_at")
    else:
        name = message["product_name"]
        header = message.get("header") or {}
        facts = {"exposure_id": message.get("exposure_id") or name,
                 "program": message.get("program"), "observation": message.get("observation"),
                 "visit": message.get("visit"),
                 "instrument": message.get("instrument") or header.get("INSTRUME"),
                 "exp_type": message.get("exp_type") or header.get("EXP_TYPE")}
        when = message.get("arrived_at")
    try:
        parsed = parse_exposure_name(facts["exposure_id"])
        facts.setdefault("program", parsed.program)
        facts["program"] = facts["program"] or parsed.program
        facts["observation"] = facts.get("observation") or parsed.observation
        facts["visit"] = facts.get("visit") or parsed.visit
    except BadName:
        pass
    return name, facts, contract.parse_time(when) if when else None


def record_time(timestamp_ms: int) -> dt.datetime | None:
    """A record's broker timestamp as a time, None if it names no date.

    It is its producer's clock (CreateTime), anyone's to set: one of year
    33658 (or before year 1) raised out of the replay's scan, and every
    replay of the topic ended in a traceback until retention took it."""
    try:
        return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None


def record_time_text(timestamp_ms: int) -> str | None:
    """``record_time`` as the report writes it (RFC 3339), None if no date."""
    when = record_time(timestamp_ms)
    return contract.iso(when) if when is not None else None


@dataclass
class PartitionScan:
    """What one partition of the source holds now."""

    partition: int
    high_watermark: int
    first_offset: int | None = None  # first retained record
    first_time: dt.datetime | None = None  # its broker timestamp (None: no date, record_time)

    @property
    def log_start(self) -> int:
        return self.first_offset if self.first_offset is not None else self.high_watermark


@dataclass
class Candidate:
    partition: int
    offset: int
    timestamp_ms: int
    message: dict[str, Any]
    origin: str | None = None  # made from elsewhere than the topic (deciders/replay_from_store.py)


@dataclass
class PartitionCoverage:
    partition: int
    log_start_offset: int
    high_watermark: int
    first_retained_time: str | None
    count: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    first_time: str | None = None
    last_time: str | None = None


def retention_gaps(scans: list[PartitionScan], since: dt.datetime | None) -> list[str]:
    """Partitions where the requested range reaches back past what is retained.

    A partition whose first retained offset is 0 has lost nothing, whatever
    its first timestamp. One that starts later has lost records to retention;
    if the request starts before its first retained record (or has no start),
    some of what was asked for may be gone.
    """
    gaps = []
    for s in sorted(scans, key=lambda s: s.partition):
        if s.log_start == 0:
            continue
        if s.first_offset is None:
            gaps.append(f"partition {s.partition}: every record is gone (offsets 0..{s.log_start - 1}"
                        " fell out of retention)")
        elif s.first_time is None:
            gaps.append(f"partition {s.partition}: offsets 0..{s.log_start - 1} fell out of "
                        f"retention; the oldest retained record, offset {s.log_start}, has a "
                        "broker timestamp that is no date (forged?): what was lost cannot be "
                        "told from the requested start")
        elif since is None or since < s.first_time:
            gaps.append(f"partition {s.partition}: offsets 0..{s.log_start - 1} fell out of "
                        f"retention; the oldest retained record is offset {s.log_start} at "
                        f"{contract.iso(s.first_time)}, after the requested start "
                        f"{contract.iso(since) if since else '(everything)'}")
    return gaps


def select(candidates: list[Candidate], selection: Selection,
           live_input: Callable[[str], bool] | None = None,
           ) -> tuple[list[Candidate], int, int]:
    """The candidates to replay: matching, live, and the latest per item.

    Returns (selected, matched, superseded). A later message for the same item
    (a corrected redelivery, a complete association after a degraded one)
    replaces an earlier one; replayed messages (namespace not live), and work
    orders with an input that ``live_input`` says is not a live product, are
    never sources.
    """
    chooser = Chooser(selection, live_input)
    for c in sorted(candidates, key=lambda c: (c.partition, c.offset)):
        chooser.offer(c)
    return chooser.result()


class Chooser:
    """``select`` a candidate at a time, holding only the latest per item
    chosen so far (a replay's scan offers each record as it is read:
    replay_sieve.py). Offered in offset order within each partition, it
    chooses as ``select`` does: the latest per item is judged by (broker
    time, partition, offset), whatever the order across partitions. (One
    event's copies in two partitions could count another copy as the item:
    records are keyed by exposure, so an event's copies share one.)"""

    def __init__(self, selection: Selection, live_input: Callable[[str], bool] | None = None,
                 prefer: Callable[[Candidate, Candidate], bool | None] | None = None,
                 keep: Callable[[Candidate], Candidate] = lambda c: c):
        # ``prefer(chosen, later)``: True/False, which of two records of one
        # item the files say is theirs; None, the time decides (replay_sieve.py).
        # ``keep``: what a chosen one is held as (packed: replay_packed.py).
        self.selection, self.live_input, self.prefer = selection, live_input, prefer
        self.keep = keep
        self.latest: dict[str, Candidate] = {}
        self.seen_events: set[str] = set()
        self.matched = 0

    def offer(self, c: Candidate) -> None:
        m = c.message
        if m.get("replay") or (m.get("namespace") or "live") != "live" \
                or m.get("priority") == "replay":
            return
        name, facts, when = facts_of(m)
        if not self.selection.matches(facts, when):
            return
        # After the selection: a look-up of each input's place in the store
        # is made for the selected only.
        if self.live_input and not all(self.live_input(i["path"])
                                       for i in m.get("inputs") or []):
            return
        previous = self.latest.get(name)
        verdict = self.prefer(previous, c) if self.prefer and previous is not None else None
        if m["event_id"] in self.seen_events:
            # The same event again (a redelivery): not another item; unless
            # the chosen record bears its id with content the file denies
            # (a forged copy sent before the real one).
            if verdict and previous is not None and \
                    previous.message.get("event_id") == m["event_id"]:
                self.latest[name] = self.keep(c)
            return
        self.seen_events.add(m["event_id"])
        self.matched += 1
        if previous is None or verdict or (verdict is None and (
                c.timestamp_ms, c.partition, c.offset) >= (
                previous.timestamp_ms, previous.partition, previous.offset)):
            self.latest[name] = self.keep(c)

    def result(self) -> tuple[list[Candidate], int, int]:
        chosen = sorted(self.latest.values(), key=lambda c: (c.partition, c.offset))
        return chosen, self.matched, self.matched - len(chosen)


def from_their_roots(candidates: list[Candidate], *, inbox_roots: Iterable[str] | None,
                     products_root: str) -> tuple[list[Candidate], int]:
    """(The candidates whose files lie where the stages take them from, how
    many did not). Anyone can write to a source topic: an arrival must name
    its own exposure's file (as the stage's admission judges it) under the
    inbox roots, a work order only live products (the store's own tree, not
    a namespace's). Judged as text, before publishing: a forged record is
    left out here, not republished under the operator's replay for a stage
    to dead-letter. ``inbox_roots`` None: the command was not told the
    deployment's roots (they are in no deployment record), so an arrival is
    judged by its file name and by lying outside the product store only.
    A work order's inputs lie in its own program's tree: the planner
    matches every companion within the science exposure's program
    (steps/associations/matching.py), and a forged order mixing in another
    program's file would put that program's data in this one's products."""
    inbox = [str(r) for r in inbox_roots] if inbox_roots is not None else None
    live = [str(products_root)]
    namespaces = [str(products_root).rstrip("/") + "/namespaces"]

    def usable(path: Any, roots: list[str]) -> bool:
        return isinstance(path, str) and path_text_problem(path) is None \
            and inside(path, roots) and not inside(path, namespaces)

    def arrival_file(m: dict[str, Any]) -> bool:
        path = m.get("path")
        if not isinstance(path, str) or path_text_problem(path) is not None \
                or not inside(path, inbox if inbox is not None else ["/"]) \
                or inside(path, live):
            return False
        try:
            return parse_exposure_name(path).exposure_id == \
                parse_exposure_name(str(m.get("exposure_id"))).exposure_id
        except BadName:
            return False

    kept = []
    for c in candidates:
        m = unpacked(c.message)
        if m.get("schema") == "calstream.arrival":
            ok = arrival_file(m)
        else:
            inputs, program = m.get("inputs"), m.get("program")
            own = [f"{live[0].rstrip('/')}/{program}"]
            ok = isinstance(inputs, list) and isinstance(program, str) \
                and _GRAMMAR["programs"][1].fullmatch(program) is not None and all(
                    isinstance(i, dict) and usable(i.get("path"), own) for i in inputs)
        if ok:
            kept.append(c)
    return kept, len(candidates) - len(kept)


def coverage(scans: list[PartitionScan], chosen: list[Candidate]) -> list[PartitionCoverage]:
    rows = {s.partition: PartitionCoverage(
        s.partition, s.log_start, s.high_watermark,
        contract.iso(s.first_time) if s.first_time else None) for s in scans}
    for c in sorted(chosen, key=lambda c: (c.partition, c.offset)):
        row = rows.setdefault(c.partition, PartitionCoverage(c.partition, 0, 0, None))
        t = record_time_text(c.timestamp_ms)
        row.count += 1
        if row.first_offset is None:
            row.first_offset, row.first_time = c.offset, t
        row.last_offset, row.last_time = c.offset, t
    return [rows[p] for p in sorted(rows)]


def replay_id(source: str, selection: Selection, namespace: str, crds_context: str | None,
              requested_at: str) -> str:
    canonical = json.dumps([source, selection.describe(), namespace, crds_context, requested_at],
                           sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def replayed_message(c: Candidate, *, source: str, topic: str, request: dict[str, Any]
                     ) -> tuple[str, contract.Message]:
    """The message to republish for candidate ``c``: (key, message)."""
    m = {k: v for k, v in unpacked(c.message).items()
         if k not in ("event_id", "emitted_at", "producer")}
    replay = {**request, "source": {"origin": c.origin} if c.origin else
              {"topic": topic, "partition": c.partition, "offset": c.offset}}
    namespace, context = request["namespace"], request.get("crds_context")
    m["producer"] = {"role": "replay"}
    if source == "raw":
        body = {**m, "source": "replay", "priority": "replay", "replay": replay}
        eid = contract.event_id("arrival", m["exposure_id"], m["digest"], "replay",
                                request["replay_id"], namespace, context)
        return m["exposure_id"], contract.build("arrival", eid, **body)
    wid = work_id(pipeline=m["pipeline"], input_digests=[i["digest"] for i in m.get("inputs", [])],
                  crds_context=context or "", parameters=m.get("parameters") or {},
                  namespace=namespace)
    body = {**m, "work_id": wid, "priority": "replay", "namespace": namespace,
            "crds_context": context, "replay": replay}
    eid = contract.event_id("work_order", wid, request["replay_id"])
    return m["product_name"], contract.build("work_order", eid, **body)
