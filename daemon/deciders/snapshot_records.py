"""The per-exposure tables of a planner snapshot, encoded with the blocks that did not change (pure).

The exposures' detector1 records (Seen), level-3 arrivals and stage-2
records are most of a snapshot: their events, headers and products are
written in blocks (deciders/snapshot_blocks.py), each header once per
exposure in ``headers`` (the first one seen of the exposure: detector1's,
else its arrival's, else its stage-2 event's) and an event or arrival whose
header is that one says ``SHARED``. ``encode_records`` writes them through a
snapshot_reuse.BlockWriter: a block is encoded only if a row's key changed
(snapshot_reuse.py), and an event's key includes the key of the header its
SHARED stands for, so a reused block never points to another header.

A captured table is ``(rows, parts)``: the map's rows as copied on the
planner's loop (a record, or a restore's row number) and how to get a row
number's parts (lazy_records). A part a restore left unread is Pending and
is read here only if its block is encoded again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from calstream.daemon.deciders.lazy_records import key_dict
from calstream.daemon.deciders.restored_records import SHARED, Headers, ResolvedHeaders
from calstream.daemon.deciders.snapshot_blocks import Pending, value
from calstream.daemon.deciders.snapshot_reuse import BlockWriter


def captured_table(records: Any) -> tuple[dict, Any]:
    """A map's rows as they are now: a copy at C speed (records are replaced,
    never changed in place; a LazyRecords' row numbers stay numbers)."""
    return dict(key_dict(records)), getattr(getattr(records, "_build", None), "parts", None)


def _rows(table: tuple[dict, Any]) -> list[tuple[str, Any]]:
    """(id, record or its parts as a tuple) of every row."""
    rows, parts = table
    every_row = getattr(getattr(parts, "__self__", None), "every_row", None)
    if every_row is None:
        return [(eid, parts(x) if type(x) is int else x) for eid, x in rows.items()]
    restored = every_row()
    return [(eid, restored[x] if type(x) is int else x) for eid, x in rows.items()]


def _event_header(eid: str, ev: Any, key: Callable[[Any], tuple]) -> tuple[Any, Any] | None:
    """(key, header) of an event's header; an unread restored event's is the
    header its snapshot kept for the exposure (what its SHARED stands for)."""
    if type(ev) is Pending:
        source = ev.column.source
        if type(source) is tuple and type(source[0]) is Headers:
            header = source[0].pending(eid)
            return key(header), header
        ev = value(ev)
    header = ev.get("header", Pending) if type(ev) is dict else Pending
    return None if header is Pending else (key(header), header)


def _header(eid: str, header: Any, key: Callable[[Any], tuple]) -> tuple[Any, Any]:
    """(key, header) of an arrival's header."""
    if type(header) is Pending and type(header.column) is ResolvedHeaders:
        column = header.column
        raw = column._raw[header.row]
        if type(raw) is str and raw == SHARED:
            header = column._headers.pending(eid)
            return key(header), header
        return key(raw), raw
    return key(header), header


def encode_records(s: dict[str, Any], ns: str, names: Any,
                   routes: Callable[[Any], int], writer: BlockWriter) -> dict[str, Any]:
    """The body's ``headers``, ``exposures``, ``arrived`` and ``calibrated``
    (``names`` numbers exposure ids: ``names.many(ids)``)."""
    releases = s["releases"]
    exposures = []
    for eid, x in _rows(s["exposures"]):
        exposures.append((eid, *x) if isinstance(x, tuple) else (
            eid, x.event, x.since, releases.get(eid), x.exposure.route))
    arrived = [(eid, *a) if isinstance(a, tuple) else (eid, a.exposure.header, a.exposure.products,
                                             a.since, a.provisional)
               for eid, a in _rows(s["arrived"])]
    calibrated = [(eid, *c) if isinstance(c, tuple) else (eid, c.event, c.since)
                  for eid, c in _rows(s["calibrated"])]
    # Each exposure's header: the first seen, in this order.
    key = writer.key
    headers: dict[str, tuple[Any, Any]] = {}
    for eid, ev, *_ in exposures:
        if eid not in headers and (h := _event_header(eid, ev, key)) is not None:
            headers[eid] = h
    arrived_headers = [_header(eid, h, key) for eid, h, *_ in arrived]
    for (eid, *_), h in zip(arrived, arrived_headers, strict=True):
        headers.setdefault(eid, h)
    for eid, ev, *_ in calibrated:
        if eid not in headers and (h := _event_header(eid, ev, key)) is not None:
            headers[eid] = h
    no_header = (None, None)

    def shared(eid: str, header: Any) -> Any:
        known = value(headers.get(eid, no_header)[1])
        return SHARED if known is header or known == header else header

    def events(table: list) -> Callable[[int, int], list]:
        def rows(start: int, end: int) -> list:
            out = []
            for eid, ev, *_ in table[start:end]:
                body = value(ev)  # a restored row nobody read: read here, in this thread
                out.append({**body, "header": shared(eid, body["header"])}
                           if "header" in body else body)
            return out
        return rows

    def arrival_header(eid: str, key_header: tuple[Any, Any]) -> Any:
        if headers.get(eid, no_header)[0] == key_header[0]:
            return SHARED
        return shared(eid, value(key_header[1]))

    ids = list(headers)
    return {
        "headers": {"id": names.many(ids), "value": writer.column(
            f"{ns}/headers", [headers[e][0] for e in ids],
            lambda a, b: [value(headers[e][1]) for e in ids[a:b]])},
        "exposures": {"id": names.many([x[0] for x in exposures]), "event": writer.column(
            f"{ns}/exposures/event", _event_keys(exposures, headers, key), events(exposures)),
            "since": [x[2] for x in exposures],
            "release": [[row, x[3]] for row, x in enumerate(exposures) if x[3] is not None],
            "route": [routes(x[4]) for x in exposures]},
        "arrived": {"id": names.many([a[0] for a in arrived]),
                    "header": [arrival_header(a[0], h)
                               for a, h in zip(arrived, arrived_headers, strict=True)],
                    "products": writer.column(
                        f"{ns}/arrived/products", [key(a[2]) for a in arrived],
                        lambda a, b: [value(x[2]) for x in arrived[a:b]]),
                    "since": [a[3] for a in arrived], "provisional": [a[4] for a in arrived]},
        "calibrated": {"id": names.many([c[0] for c in calibrated]), "event": writer.column(
            f"{ns}/calibrated/event", _event_keys(calibrated, headers, key), events(calibrated)),
            "since": [c[2] for c in calibrated]},
    }


def _event_keys(table: list, headers: dict[str, tuple[Any, Any]],
                key: Callable[[Any], tuple]) -> list[tuple]:
    """An event row's key: the event's, and that of the header its SHARED would stand for."""
    none = (-1, -1)
    return [key(ev) + (headers[eid][0] if eid in headers else none) for eid, ev, *_ in table]


def seed(reuse: Any, ns: str, headers: Headers, exposure_events: Any, products: Any,
         calibrated_events: Any) -> None:
    """A restored namespace's stored blocks in ``reuse`` (a snapshot_reuse.BlockCache),
    keyed as ``encode_records`` keys the rows of a state nobody read since."""
    hcol = id(headers._values)

    def event_key(column: Any) -> Callable[[int], Any]:
        ids = column.source[1]
        return lambda r: (id(column), r, hcol, headers.row_of(ids[r]))

    reuse.seed(f"{ns}/headers", headers._values, lambda r: (hcol, r))
    reuse.seed(f"{ns}/exposures/event", exposure_events, event_key(exposure_events))
    reuse.seed(f"{ns}/arrived/products", products, lambda r: (id(products), r))
    reuse.seed(f"{ns}/calibrated/event", calibrated_events, event_key(calibrated_events))
