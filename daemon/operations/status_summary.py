"""What ``calstream status`` reports, as data, and the sums over the daemons'
metrics: pure (the collection is ``status_collection.py``, the text
``status_render.py``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Endpoint:
    url: str
    reachable: bool = False
    error: str | None = None
    ready: bool | None = None
    problems: list[str] = field(default_factory=list)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    planner: dict[str, Any] | None = None  # /planner, from a daemon with the planner role
    planner_error: str | None = None  # why /planner answered, but nothing usable


@dataclass
class PartitionLag:
    partition: int
    committed: int | None  # None: the group has committed nothing here
    high: int
    lag: int


@dataclass
class GroupLag:
    stage: str
    group: str
    topic: str
    lag: int | None = None
    partitions: list[PartitionLag] = field(default_factory=list)
    members: int | None = None
    state: str | None = None
    error: str | None = None


@dataclass
class BrokerView:
    bootstrap: str | None
    error: str | None = None
    lag: list[GroupLag] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    # The exposures held now, as `calstream holds list` shows them
    # (operations/holds_view.py); None: the topic unreadable.
    holds: list[dict[str, Any]] | None = None
    holds_checked: bool = False  # against the planner's ledger (status given its work dir)
    holds_note: str | None = None  # why rows of the topic's are not checked
    unreadable: int = 0  # records on those topics that are not calstream messages
    redrives_error: str | None = None  # the originals' topics unread: redrives not known
    missing_topics: list[str] = field(default_factory=list)

    def count_unreadable(self) -> None:
        self.unreadable += 1


@dataclass
class Status:
    at: float
    topic_prefix: str
    group_prefix: str
    endpoints: list[Endpoint]
    stages: dict[str, dict[str, Any]]
    broker: BrokerView
    # What the planner's metrics say: held exposures, the oldest hold's age,
    # open associations per stage (absent when no daemon given runs a planner).
    planner: dict[str, Any] = field(default_factory=dict)
    # Items waiting on an infrastructure fault (disk, CRDS): {stage, cause, items}.
    parked: list[dict[str, Any]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        # Parked work counts: parked items step aside, so a daemon whose
        # store is full stays ready while nothing it runs can be written.
        return (self.broker.error is None and all(e.reachable and e.ready for e in self.endpoints)
                and not any(row.error for row in self.broker.lag) and not self.parked)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for ep in d["endpoints"]:
            del ep["samples"]  # the raw scrape is what /metrics is for
        d["healthy"] = self.healthy
        return d


def _values(endpoints: list[Endpoint], name: str,
            *labelled: str) -> list[tuple[dict[str, str], float]]:
    """The samples of ``name`` that can be summed: a number (not NaN or
    infinite) with the labels ``labelled`` it is summed by. What a daemon
    serves is read as untrusted (another calstream version, or whatever
    answers at a --metrics-url given): a NaN count or a sample without its
    stage label raised out of `calstream status` in a traceback."""
    return [(labels, v) for ep in endpoints for n, labels, v in ep.samples
            if n == name and math.isfinite(v) and all(k in labels for k in labelled)]


def summarise_metrics(endpoints: list[Endpoint]) -> dict[str, dict[str, Any]]:
    """Per stage, summed over every daemon (max for memory, newest for progress).

    A stage has only the keys its daemons reported: the watcher has no
    in-flight work, a consumer stage has no inbox."""
    stages: dict[str, dict[str, Any]] = {}

    def add(stage: str, key: str, value: float, sub: str | None = None) -> None:
        s = stages.setdefault(stage, {})
        if sub is None:
            s[key] = s.get(key, 0) + int(value)
        else:
            d = s.setdefault(key, {})
            d[sub] = d.get(sub, 0) + int(value)

    for labels, v in _values(endpoints, "calstream_in_flight", "stage"):
        add(labels["stage"], "in_flight", v)
    for labels, v in _values(endpoints, "calstream_stage_runs_total", "stage", "outcome"):
        add(labels["stage"], "runs", v, labels["outcome"])
    for labels, v in _values(endpoints, "calstream_stage_retries_total", "stage"):
        add(labels["stage"], "retries", v)
    for labels, v in _values(endpoints, "calstream_dead_letters_total", "stage", "category"):
        add(labels["stage"], "dead_letters", v, labels["category"])
    for labels, v in _values(endpoints, "calstream_worker_restarts_total", "stage", "cause"):
        add(labels["stage"], "worker_restarts", v, labels["cause"])
    for labels, v in _values(endpoints, "calstream_runs_waiting_alone", "stage", "run"):
        if v > 0:  # a suspect's turn alone (doers/work_item_runs.Solitude): why runs wait
            add(labels["stage"], "waiting_alone", v, labels["run"])
    for labels, v in _values(endpoints, "calstream_arrivals_total", "source"):
        add("watcher", "arrivals", v, labels["source"])
    for _labels, v in _values(endpoints, "calstream_watcher_pending_files"):
        add("watcher", "pending_files", v)
    for labels, v in _values(endpoints, "calstream_worker_peak_rss_bytes", "stage"):
        s = stages.setdefault(labels["stage"], {})
        s["worker_peak_rss_bytes"] = max(s.get("worker_peak_rss_bytes", 0), int(v))
    for labels, v in _values(endpoints, "calstream_last_progress_timestamp_seconds",
                             "stage"):
        s = stages.setdefault(labels["stage"], {})
        s["last_progress"] = max(s.get("last_progress", 0.0), v)
    return stages


def _deciding(endpoints: list[Endpoint]) -> list[Endpoint]:
    """The daemons whose planner gauges count: the lease holder's
    (``calstream_planner_leader`` 1), where one says so. A planner that lost
    the lease stops setting its gauges and keeps its last values: summed,
    every exposure held before a takeover was counted twice, and its old
    hold age kept the oldest hold's age up. Without any leader (no lease,
    an older daemon, a takeover under way) every daemon's count."""
    leaders = [ep for ep in endpoints if any(
        n == "calstream_planner_leader" and v == 1 for n, _labels, v in ep.samples)]
    return leaders or endpoints


def summarise_planner(endpoints: list[Endpoint]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    views_from = endpoints
    endpoints = _deciding(endpoints)
    for _labels, v in _values(endpoints, "calstream_held_exposures"):
        out["held"] = out.get("held", 0) + int(v)
    for _labels, v in _values(endpoints, "calstream_held_for_direct_image"):
        out["held_for_direct_image"] = out.get("held_for_direct_image", 0) + int(v)
    for name in ("held_without_product", "pointing_updates_waiting"):
        for _labels, v in _values(endpoints, f"calstream_{name}"):
            out[name] = out.get(name, 0) + int(v)
    for _labels, v in _values(endpoints, "calstream_oldest_hold_age_seconds"):
        out["oldest_hold_age_seconds"] = max(out.get("oldest_hold_age_seconds", 0.0), v)
    for labels, v in _values(endpoints, "calstream_open_associations", "stage"):
        d = out.setdefault("open_associations", {})
        d[labels["stage"]] = d.get(labels["stage"], 0) + int(v)
    # Read as untrusted (a daemon of another version, or whatever answers
    # at a --metrics-url given): a view or leadership that was no object
    # raised out of `calstream status`.
    views = [ep.planner for ep in views_from if isinstance(ep.planner, dict) and ep.planner]
    # Under the planner lease the active planner's view comes first; a
    # standby's is the same decisions, not yet (or never) published.
    views.sort(key=lambda v: _role(v) != "active")
    if views:
        out["view"] = views[0]
        out["roles"] = [_role(v) for v in views]
    elif errors := [ep.planner_error for ep in views_from if ep.planner_error]:
        out["view_error"] = errors[0]
    return out


def _role(view: dict[str, Any]) -> str:
    """A planner view's leadership role; "active" where it says none."""
    leadership = view.get("leadership")
    role = leadership.get("role", "active") if isinstance(leadership, dict) else "active"
    return role if isinstance(role, str) else "active"


def planner_left(view: Any) -> dict[str, int]:
    """From a /planner view, the records left to decide on each of the
    planner's topics, only where some are (``behind``; what a daemon serves
    is read as untrusted: anything but a count is left out)."""
    behind = view.get("behind") if isinstance(view, dict) else None
    if not isinstance(behind, dict):
        return {}
    return {str(t): n for t, n in sorted(behind.items()) if type(n) is int and n > 0}


# What the planner keeps of exposures it has no product event of, from its
# /planner view: (the list's key, its count's key, what status calls it).
UNSEEN_EXPOSURES = (
    ("held_without_product", "held exposures no product event backs (only `calstream holds "
                             "release EXPOSURE --reason ...` ends them)"),
    ("pointing_updates_waiting", "pointing updates waiting for their exposure's detector1 "
                                 "product (applied when it comes)"),
)


def planner_unseen(view: Any) -> list[tuple[str, int, list[str]]]:
    """From a /planner view, each of UNSEEN_EXPOSURES that has any: (what it
    is, how many, the exposures named, at most the view's first 100). What a
    daemon serves is read as untrusted: a count that is no count is the
    list's length, a name that is no text left out."""
    if not isinstance(view, dict):
        return []
    out = []
    for key, words in UNSEEN_EXPOSURES:
        names = view.get(key)
        names = [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
        count = count_of(view, key, len(names))
        if count:
            out.append((words, count, names))
    return out


def count_of(part: dict[str, Any], key: str, listed: int) -> int:
    """How many entries of ``part[key]`` the planner has in all: its
    ``<key>_count`` beside the first 100 it lists (doers/planner_status.py),
    else (a planner of before, which listed them all; a count that is no
    count) the ``listed`` length."""
    count = part.get(f"{key}_count")
    return count if type(count) is int and count >= listed else listed


# The lists of a namespace of the /planner view the planner cuts to its
# first 100 (doers/planner_status.py): (where, the key, what they are).
CUT_LISTS = (("stage3", "missing", "missing exposures"),
             ("stage3", "candidates", "open stage-3 candidates"),
             ("stage3", "abandoned", "abandoned stage-3 candidates"),
             (None, "stage2_waiting", "stage-2 associations waiting"))


def planner_cut(view: Any, namespace: str) -> list[tuple[str, int, int]]:
    """Of ``namespace`` in a /planner view, each list the planner did not
    list whole: (what it is, how many listed, how many in all). The
    console places what is listed on its observations' pages, so their
    counts are of those only. Untrusted as the rest of the view."""
    namespaces = view.get("namespaces") if isinstance(view, dict) else None
    ns = namespaces.get(namespace) if isinstance(namespaces, dict) else None
    out = []
    for where, key, words in CUT_LISTS if isinstance(ns, dict) else ():
        part = ns if where is None else ns.get(where)
        listed = part.get(key) if isinstance(part, dict) else None
        if isinstance(listed, (list, dict)) and count_of(part, key, len(listed)) > len(listed):
            out.append((words, len(listed), count_of(part, key, len(listed))))
    return out


def summarise_parked(endpoints: list[Endpoint]) -> list[dict[str, Any]]:
    """Items parked on an infrastructure fault, by stage, cause and the
    directory a disk fault was writing under (``root``, "" for the others),
    from ``calstream_parked_items`` (they resume by themselves when it clears)."""
    totals: dict[tuple[str, str, str], float] = {}
    for labels, value in _values(endpoints, "calstream_parked_items"):
        if value > 0:
            key = (labels.get("stage", "?"), labels.get("cause", "?"), labels.get("root", ""))
            totals[key] = totals.get(key, 0) + value
    return [{"stage": st, "cause": cause, "root": root, "items": int(n)}
            for (st, cause, root), n in sorted(totals.items())]
