"""A restored snapshot's per-exposure records, built when first read (pure).

deciders/planner_snapshot.py restores the exposures' detector1 records
(Seen), their level-3 arrivals (Arrived) and stage-2 records (Calibrated)
as ``lazy_records.Parts``; the builders here make the record the decider
would have made when the event came (the same objects from the same event:
decisions read no difference). The parts are, in order, what the snapshot
keeps of each:

* Seen: (event, since, release, route)
* Arrived: (header, products, since, provisional)
* Calibrated: (event, since)

A restore gives each map its records as row numbers and a ``Rows`` (the
columns the parts are in); a part in a blocked column
(deciders/snapshot_blocks.py) is read when its record is built, and
checked then (``checked_event``): the file's digest, checked whole at
start, says the block is what this calstream version wrote; a snapshot
given whole in memory is checked whole at restore.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from itertools import repeat
from typing import Any

from calstream.daemon.deciders.event_checks import EventIds
from calstream.daemon.deciders.lazy_records import Parts, key_dict
from calstream.daemon.deciders.level3_candidates import Arrived, Calibrated
from calstream.daemon.deciders.planner_records import Seen, routed_exposure
from calstream.daemon.deciders.snapshot_blocks import (
    UNREADABLE,
    BlockedColumn,
    Pending,
    SnapshotInvalid,
)
from calstream.steps.associations import Exposure
from calstream.steps.failures import error_text

SHARED = "="  # in place of a header: the exposure's header, kept once in "headers"


class Rows:
    """The records of a restored map as rows of ``columns`` (each indexable
    by row): called as the map's builder with a row number, ``build``s the
    record from that row; ``parts`` is the row for a snapshot, a value of a
    column that is not a plain list (read from a block) left Pending."""

    __slots__ = ("_build", "_columns", "_eager")

    def __init__(self, build: Callable[[str, Parts], Any], columns: list) -> None:
        self._build, self._columns = build, columns
        self._eager = [type(c) is list for c in columns]

    def __call__(self, key: str, row: int) -> Any:
        try:
            return self._build(key, Parts(c[row] for c in self._columns))
        except SnapshotInvalid:
            raise
        except UNREADABLE as exc:
            # The state is unreadable, as for a block (snapshot_blocks), and
            # the planner rebuilds; raised as it was, it failed the valid
            # record whose decision read it.
            raise SnapshotInvalid(f"a restored record of {str(key)[:60]!r} cannot be built: "
                                  f"{error_text(exc, 200)}") from None

    def parts(self, row: int) -> Parts:
        return Parts(c[row] if eager else Pending(c, row)
                     for c, eager in zip(self._columns, self._eager, strict=True))

    def every_row(self) -> list[tuple]:
        """``parts`` of every row, made at C speed (a snapshot of a restored
        state takes a million of them)."""
        length = len(next(c for c, eager in zip(self._columns, self._eager, strict=True)
                          if eager))
        return list(zip(*(c if eager else map(Pending, repeat(c), range(length))
                          for c, eager in zip(self._columns, self._eager, strict=True)),
                        strict=True))


def checked_event(ev: Any) -> Any:
    """``ev`` if its record can be built from it, else ValueError."""
    if type(ev) is not dict or type(ev.get("outputs")) is not list or "header" not in ev \
            or type(ev.get("inputs")) is not list:
        raise ValueError("a product event without outputs, inputs or header")
    for o in ev["outputs"]:
        if type(o) is not dict or "path" not in o or "suffix" not in o:
            raise ValueError("a product event's output without path or suffix")
    return ev


def seen(eid: str, parts: Parts) -> Seen:
    ev, since, release, route = parts
    outputs = ev["outputs"]
    return Seen(routed_exposure(eid, ev["header"], {o["suffix"]: o["path"] for o in outputs},
                                route), {o["path"]: o for o in outputs}, ev, since, release)


def calibrated(eid: str, parts: Parts) -> Calibrated:
    ev, since = parts
    outputs = ev["outputs"]
    return Calibrated(Exposure(eid, ev["header"], {o["suffix"]: o["path"] for o in outputs}),
                      {o["path"]: o for o in outputs}, ev, since)


def arrived(exposures: MutableMapping) -> Callable[[str, Parts], Arrived]:
    """The builder of arrivals that share their Exposure with the detector1
    record when it is the same (one object, as when it arrived)."""
    def build(eid: str, parts: Parts) -> Arrived:
        header, products, since, provisional = parts
        record = exposures.get(eid)
        if record is not None and record.exposure.header is header and \
                record.exposure.products == products:
            return Arrived(record.exposure, since, provisional)
        return Arrived(Exposure(eid, header, products), since, provisional)
    return build


def table_ids(names: list[str], column: dict, *lists: str) -> list[str]:
    """A table's exposure ids by row; its plain columns ``lists`` as long."""
    ids = [names[i] for i in column["id"]]
    if any(type(column[c]) is not list or len(column[c]) != len(ids) for c in lists):
        raise SnapshotInvalid("a snapshot table's columns are not of one length")
    return ids


def table_rows(ids: list[str]) -> dict[str, int]:
    rows = dict(zip(ids, range(len(ids)), strict=True))
    if len(rows) != len(ids):
        raise SnapshotInvalid("an exposure twice in one snapshot table")
    return rows


class Headers:
    """The exposures' headers (kept once each, in blocks), by exposure id;
    ``resolved(ids, raw)`` is a column of headers or SHARED, resolved on read."""

    def __init__(self, names: list[str], column: dict, blocks) -> None:
        self._ids = [names[i] for i in column["id"]]
        self._values = BlockedColumn(blocks, column["value"], len(self._ids))
        self._row: dict[str, int] | None = None  # built at the first SHARED read

    def __call__(self, eid: str, header: Any) -> Any:
        if type(header) is not str or header != SHARED:
            return header
        return self._values[self.row_of(eid)]

    def row_of(self, eid: str) -> int:
        """The row of ``eid``'s header (SnapshotInvalid if it has none)."""
        if self._row is None:
            self._row = table_rows(self._ids)
        row = self._row.get(eid)
        if row is None:
            raise SnapshotInvalid(f"no header for {eid[:60]} in the snapshot")
        return row

    def pending(self, eid: str) -> Pending:
        """``eid``'s header, unread: what a SHARED of the snapshot stands for."""
        return Pending(self._values, self.row_of(eid))

    def events(self, blocks, ids: list[str], numbers: Any) -> BlockedColumn:
        """A column of product events, each with its header, checked as read."""
        def finish(row: int, ev: Any) -> Any:
            if type(ev) is dict and "header" in ev:
                ev["header"] = self(ids[row], ev["header"])  # a new dict per row: safe
            return checked_event(ev)
        column = BlockedColumn(blocks, numbers, len(ids), finish)
        column.source = (self, ids)  # a SHARED in row r: self.pending(ids[r])
        return column


class ResolvedHeaders:
    """An arrival's header column (SHARED or a header), resolved when read."""

    def __init__(self, headers: Headers, ids: list[str], raw: list) -> None:
        self._headers, self._ids, self._raw = headers, ids, raw

    def __getitem__(self, row: int) -> Any:
        return self._headers(self._ids[row], self._raw[row])

    def check_all(self) -> None:
        for row in range(len(self._ids)):
            self[row]


def add_members(l3, cand, members: list[str], visit_of: dict[str, str],
                 provisional: set[str]) -> None:
    """Level3State._add_member for every member at once: what it keeps per
    member (held, uncalibrated, in flight, visits, the candidates of a
    member and of a visit), without reading any member's record (held: its
    arrival was provisional; in flight: its stage-2 order is in the
    restored orders; the sorted stage-2 digests are in the snapshot) or parsing
    each exposure's name again for its visit (the visits' members say it).
    tests/unit/test_planner_snapshot.py compares the two. Set operations
    and copies of one set of the key (a copy keeps the key's hash: a
    Level3Key hashes in Python) keep it at C speed: half a million members
    for a million events."""
    arrived, calibrated = key_dict(l3.arrived), key_dict(l3.calibrated)
    cand.members.update(members)
    cand.held.update(provisional.intersection(members))
    cand.uncalibrated.update(cand.members.difference(calibrated))
    cand.in_flight.update(cand.uncalibrated.intersection(l3._stage2_sent).difference(
        e for e in l3._stage2_failed if not l3._in_flight(e)))  # dead letters are few
    keys_of, just_this = l3._keys_of_member, {cand.key}
    for m in members:
        keys = keys_of.get(m)
        if keys is None:
            keys_of[m] = just_this.copy()
        else:
            keys.add(cand.key)
    cand.visits.update(visit_of[m] for m in members if m in arrived)
    for visit in cand.visits:
        l3._keys_by_visit.setdefault(visit, set()).add(cand.key)


def event_ids(body: dict) -> EventIds:
    """The event-id memory: its ids as one list, their digests as one hex text."""
    event_ids = EventIds()
    raw, ids, size = bytes.fromhex(body["digest"]), body["id"], body["digest_size"]
    if type(size) is not int or size <= 0 and ids or len(raw) != size * len(ids) or \
            not all(type(i) is str for i in ids):
        raise SnapshotInvalid("event ids and their digests do not match")
    event_ids._digests = OrderedDict(zip(ids, [raw[n:n + size] for n in range(0, len(raw), size)]
                                         if ids else [], strict=True))
    return event_ids
