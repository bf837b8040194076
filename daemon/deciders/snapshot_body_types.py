"""Every field of a planner snapshot's body held to what a snapshot writes, before a restore reads any (pure).

The file's sha256 says its bytes are the bytes its envelope names, not who
wrote them: anyone can seal a body of their own. A restore that took its
fields as they came built a state that failed later, in a decision on a
valid record (a candidate's time given as text: ``'>' not supported``,
door fuzz seed 4), or decided on values no planner could have had. So
``check`` holds the whole body (not its blocks: each is checked as it is
read, deciders/snapshot_blocks.py) to the types and ranges
deciders/planner_snapshot.py writes, and anything else is SnapshotInvalid:
the planner rebuilds from the topics.

Cheap because a restart with a million events must stay within seconds
(issue 14): the long columns (a row per exposure) are judged by the set of
their item types, their minimum, maximum and sum, at C speed; a loop in
Python runs only over the short lists (level-3 candidates, routes, holds).
"""

from __future__ import annotations

from typing import Any

from calstream.daemon.deciders.admission import is_version
from calstream.daemon.deciders.snapshot_blocks import SnapshotInvalid
from calstream.steps.exposure import FITS_VALUE_TYPES
from calstream.steps.routing import Route
from calstream.topics import contract

SHARED = "="  # restored_records.SHARED: an exposure's header kept once (no import: a cycle)

# Every time a planner keeps is a Unix time it read from a valid date-time
# (years 1 to 9999) or its own clock: well inside these bounds.
_TIME_BOUND = 1e12
_NONE = type(None)
_ROUTE_TEXTS = ("instrument", "exp_type", "mode", "role", "reason")
_ROUTE_OPTIONAL = ("stage2", "stage2_input", "stage3", "other", "asn_type", "asn_rule")
_RELEASE_PATHS = ("pointing", "operator", "redelivery")
_NAMESPACE_FIELDS = frozenset({
    "namespace", "replay", "headers", "exposures", "arrived", "calibrated", "candidates",
    "ordered", "rejected", "level3", "index", "sciences", "l3_candidates", "plans", "planned",
    "plan_headers", "planned_keys", "restored", "visits", "incomplete_visits", "names"})


def _refuse(where: str, what: str) -> SnapshotInvalid:
    return SnapshotInvalid(f"snapshot field {where[:120]}: {what}")


def _list(value: Any, where: str, length: int | None = None) -> list:
    if type(value) is not list or length is not None and len(value) != length:
        raise _refuse(where, "not a list" if length is None else f"not a list of {length}")
    return value


def _dict(value: Any, where: str, fields: frozenset | None = None) -> dict:
    if type(value) is not dict or fields is not None and not fields <= value.keys():
        raise _refuse(where, "not an object" if fields is None else
                      f"missing {', '.join(sorted(fields - value.keys()))[:80]}")
    return value


def _all(values: Any, where: str, *types: type) -> list:
    """A list whose items are all of ``types`` (bool is not int)."""
    if not set(map(type, _list(values, where))) <= set(types):
        raise _refuse(where, f"an item that is not {'/'.join(t.__name__ for t in types)}")
    return values


def _rows(values: Any, where: str, count: int) -> list:
    """Row numbers into a table of ``count`` rows."""
    if _all(values, where, int) and (min(values) < 0 or max(values) >= count):
        raise _refuse(where, f"a row number outside 0..{count - 1}")
    return values


def _times(values: Any, where: str) -> None:
    """Unix times: finite numbers. min and max bound them (and infinities);
    the sum is NaN if one of them is, whatever its place."""
    if _all(values, where, float, int) and not (
            -_TIME_BOUND < min(values) and max(values) < _TIME_BOUND
            and sum(values) == sum(values)):
        raise _refuse(where, "a time that is not a finite Unix time")


def _texts(value: Any, where: str) -> dict:
    """A map of text to text."""
    _all(list(_dict(value, where).values()), where, str)
    return value


def _header(value: Any, where: str) -> None:
    if not FITS_VALUE_TYPES.issuperset(map(type, _dict(value, where).values())):
        raise _refuse(where, "a header value no FITS card can hold")


def _pairs(value: Any, where: str) -> None:
    """(name, value) text pairs, as a Level3Key's optics and extra."""
    for pair in _list(value, where):
        _all(pair, where, str)
        if len(pair) != 2:
            raise _refuse(where, "not a pair")


def check(body: dict) -> None:
    """SnapshotInvalid, naming the field, unless every field of ``body`` is
    what deciders/planner_snapshot.py writes (the format already read)."""
    routes = _list(body.get("routes"), "routes")
    for n, route in enumerate(routes):
        _route(route, f"routes[{n}]", len(routes))
    for eid, hold in _dict(body.get("holds"), "holds").items():
        # The holds topic's own schema: what the planner kept is what it read there or built.
        if type(hold) is not dict or not contract.is_valid("hold", hold) \
                or hold["exposure_id"] != eid:
            raise _refuse(f"holds[{eid!r}]", "not a hold record of that exposure")
    _all(body.get("plans"), "plans", dict)  # their contents: Plan.from_json
    for ns, state in _dict(body.get("namespaces"), "namespaces").items():
        _namespace(ns, _dict(state, f"namespaces[{ns!r}]", _NAMESPACE_FIELDS), len(routes))


def _route(body: Any, where: str, count: int) -> None:
    if type(body) is not dict or body.keys() != Route.__dataclass_fields__.keys():
        raise _refuse(where, "not a route's fields")
    if not all(type(body[k]) is str for k in _ROUTE_TEXTS) or \
            not all(type(body[k]) in (str, _NONE) for k in _ROUTE_OPTIONAL) or \
            type(body["is_tso"]) is not bool or body["also"] is not None and (
                type(body["also"]) is not int or not 0 <= body["also"] < count):
        raise _refuse(where, "a value of another type")
    _all(body["needs"], f"{where}.needs", str)


def _namespace(ns: str, s: dict, routes: int) -> None:
    at = f"namespaces[{ns!r}]"
    replay = s["replay"]
    # A replay's namespace has its replay once its first event came; live never has one.
    if replay is not None and (ns == "live" or type(replay) is not dict or replay.get(
            "namespace") != ns or type(replay.get("replay_id")) is not str):
        raise _refuse(f"{at}.replay", "not this namespace's replay")
    names = len(_all(s["names"], f"{at}.names", str))
    _rows(_dict(s["headers"], f"{at}.headers")["id"], f"{at}.headers.id", names)
    ex = _dict(s["exposures"], f"{at}.exposures")
    _rows(ex["id"], f"{at}.exposures.id", names)
    _times(ex["since"], f"{at}.exposures.since")
    _rows(ex["route"], f"{at}.exposures.route", routes)
    for row, release in _list(ex["release"], f"{at}.exposures.release"):
        _rows([row], f"{at}.exposures.release", len(ex["id"]))
        _release(release, f"{at}.exposures.release[{row}]")
    a = _dict(s["arrived"], f"{at}.arrived")
    _rows(a["id"], f"{at}.arrived.id", names)
    for header in _list(a["header"], f"{at}.arrived.header"):
        if header != SHARED or type(header) is not str:
            _header(header, f"{at}.arrived.header")
    _times(a["since"], f"{at}.arrived.since")
    _all(a["provisional"], f"{at}.arrived.provisional", bool)
    c = _dict(s["calibrated"], f"{at}.calibrated")
    _rows(c["id"], f"{at}.calibrated.id", names)
    _times(c["since"], f"{at}.calibrated.since")
    ordered = _dict(s["ordered"], f"{at}.ordered")
    _all(ordered["work_id"], f"{at}.ordered.work_id", str)
    _rows(ordered["name"], f"{at}.ordered.name", names)
    _candidates(_dict(s["candidates"], f"{at}.candidates"), f"{at}.candidates", names, routes,
                len(ordered["work_id"]))
    _pairs(s["rejected"], f"{at}.rejected")  # (exposure id, digest)
    for name, product in _dict(s["level3"], f"{at}.level3").items():
        header, outputs = _list(product, f"{at}.level3[{name!r}]", 2)
        _header(header, f"{at}.level3[{name!r}]")
        for output in _dict(outputs, f"{at}.level3[{name!r}]").values():
            if type(output) is not dict or type(output.get("path")) is not str or \
                    type(output.get("suffix")) is not str:
                raise _refuse(f"{at}.level3[{name!r}]", "an output without path or suffix")
    for part in ("index", "sciences", "visits"):  # [bucket or visit, exposure rows]
        for key, rows in _list(s[part], f"{at}.{part}"):
            _all([key] if part == "visits" else key, f"{at}.{part}", str)
            _rows(rows, f"{at}.{part}", names)
    for cand in _list(s["l3_candidates"], f"{at}.l3_candidates"):
        _level3_candidate(cand, f"{at}.l3_candidates", names, routes)
    _all(s["plans"], f"{at}.plans", str)
    for acids in _dict(s["planned"], f"{at}.planned").values():
        _all(acids, f"{at}.planned", str)
    for header in _dict(s["plan_headers"], f"{at}.plan_headers").values():
        _header(header, f"{at}.plan_headers")
    for key, members in _list(s["planned_keys"], f"{at}.planned_keys"):
        _level3_key(key, f"{at}.planned_keys")
        _all(members, f"{at}.planned_keys", str)
    for orders in _dict(s["restored"], f"{at}.restored").values():
        for order in _list(orders, f"{at}.restored"):
            if type(order) is not dict or type(order.get("work_id")) is not str or \
                    not is_version(order.get("version")) or \
                    type(order.get("degraded")) not in (str, _NONE):
                raise _refuse(f"{at}.restored", "not an order's work id, version and degraded")
    _all(s["incomplete_visits"], f"{at}.incomplete_visits", str)
    for failures in _dict(s.get("stage2_failed", {}), f"{at}.stage2_failed").values():
        _all(list(_dict(failures, f"{at}.stage2_failed").values()), f"{at}.stage2_failed", str)
    for marks in _dict(s.get("stage2_redriven", {}), f"{at}.stage2_redriven").values():
        _all(_list(marks, f"{at}.stage2_redriven"), f"{at}.stage2_redriven", str)


def _candidates(c: dict, at: str, names: int, routes: int, ordered: int) -> None:
    """The level-2 candidates; their ``waiting_for``, encoded, is checked as
    it is decoded (``waiting_maps``)."""
    count = len(_rows(c["id"], f"{at}.id", names))
    _rows(c["route"], f"{at}.route", routes)
    _times(c["since"], f"{at}.since")
    _all(c["complete"], f"{at}.complete", bool)
    sent = _all(c["sent"], f"{at}.sent", int, str, _NONE)  # a row of "ordered", or a work id
    _rows([s for s in sent if type(s) is int], f"{at}.sent", ordered)
    if any(len(c[k]) != count for k in ("route", "since", "complete", "sent")):
        raise _refuse(at, "columns not of one length")


def waiting_maps(decoded: list, where: str) -> list:
    """A decoded ``waiting_for`` column: each a map of text to text."""
    _all(decoded, where, dict)
    for waiting in filter(None, decoded):
        _texts(waiting, where)
    return decoded


def _release(value: Any, where: str) -> None:
    """A Seen's release (deciders/holds.py release_by_update, or a hold's)."""
    if type(value) is not dict or value.get("path") not in _RELEASE_PATHS or \
            not all(type(value.get(k)) in (str, _NONE) for k in ("at", "by", "reason", "digest")):
        raise _refuse(where, "not a release")
    if value["path"] == "pointing" and (type(value.get("keywords")) is not dict
                                        or type(value.get("update_event_id")) is not str):
        raise _refuse(where, "a pointing release without its keywords and update")


def _level3_key(key: Any, where: str) -> None:
    (program, acid, instrument, asn_type, asn_rule, exp_type, tso, optics, target, aux, extra,
     target_name) = _list(key, where, 12)
    _all([program, acid, instrument, asn_type, asn_rule, exp_type, target_name], where, str)
    _all([tso, aux], where, bool)
    _all([target], where, str, _NONE)
    _pairs(optics, where)
    _pairs(extra, where)


def _level3_candidate(c: Any, where: str, names: int, routes: int) -> None:
    # A 15th item only if it was abandoned (its reason): a snapshot of before
    # abandoned candidates existed is read as it is.
    (key, route, opened, changed, members, sent, expected_by, product_name, problem, signature,
     waiting, waiting_for, missing, digests, *abandoned) = _list(c, where, 15 if (
         type(c) is list and len(c) == 15) else 14)
    if abandoned and type(abandoned[0]) is not str:
        raise _refuse(f"{where}.abandoned", "not a reason")
    _level3_key(key, f"{where}.key")
    _rows([route], f"{where}.route", routes)
    _times([opened, changed], f"{where}.opened")
    _rows(members, f"{where}.members", names)
    for one in _list(sent, f"{where}.sent"):
        version, work_id, sig, degraded = _list(one, f"{where}.sent", 4)
        if not is_version(version) or type(work_id) is not str or \
                type(degraded) not in (str, _NONE):
            raise _refuse(f"{where}.sent", "not a version, work id and degraded")
        _all(sig, f"{where}.sent", str)
    if expected_by not in ("plan", "headers") or type(expected_by) is not str:
        raise _refuse(f"{where}.expected_by", "neither plan nor headers")
    _all([product_name, problem], where, str, _NONE)
    if signature != SHARED or type(signature) is not str:
        _all(signature, f"{where}.signature", str)
    _all([waiting], f"{where}.waiting", bool)
    if waiting_for is not None:
        _texts(waiting_for, f"{where}.waiting_for")
    if missing is not None:
        _all(missing, f"{where}.missing", str)
    _all(digests, f"{where}.digests", str)
