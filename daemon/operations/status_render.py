"""``calstream status`` as text for a human: one small function per section."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calstream.daemon.operations.dead_letter_redrives import REDRIVES, pending
from calstream.daemon.operations.holds_view import not_the_planners
from calstream.daemon.operations.logs import escape_controls
from calstream.daemon.operations.parked_causes import parked_lines
from calstream.daemon.operations.status_summary import (
    BrokerView,
    Endpoint,
    GroupLag,
    Status,
    count_of,
    planner_left,
    planner_unseen,
)
from calstream.steps.failures import error_text
from calstream.topics import contract
from calstream.topics.dead_letters import bounded

LISTED = 20  # at most this many lines per list; the rest is counted


def _ago(t: float | None, now: float) -> str:
    return f"{_duration(now - t)} ago" if t else "never"


def _duration(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def _when(iso: str, now: float) -> str:
    try:
        t = contract.parse_time(iso)
    except ValueError:
        return iso
    # In UTC, as its "Z" says: a time of another offset was shown in its own
    # hours with a Z after them.
    return f"{t.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M:%S')}Z ({_ago(t.timestamp(), now)})"


def _mib(b: int) -> str:
    return f"{b / 2**20:.0f} MiB"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def _oneline(text: Any, width: int) -> str:
    return " ".join(str(text).split())[:width]


def _more(items: list, indent: str = "    ", total: int | None = None) -> list[str]:
    """How many of ``total`` (``items`` where it is all) the first LISTED left out."""
    total = len(items) if total is None else total
    return [f"{indent}... and {total - min(len(items), LISTED)} more"] \
        if total > min(len(items), LISTED) else []


def printable(st: Status) -> str:
    """``render``, each line escaped for a terminal: dead letters, holds and
    products are records anyone may write, and their text reached it raw (a
    lone surrogate failed the write; an escape sequence would repaint it).
    Escaped line by line as built, not once joined: a line break in a record
    (a file named ``jw\n...``) then shows as ``\n`` instead of starting a
    line of its own, which could pass for another dead letter or product."""
    return "".join(escape_controls(line) + "\n" for line in _lines(st))


def render(st: Status) -> str:
    return "".join(line + "\n" for line in _lines(st))


# Characters of one line: a line is one item, and an item's texts are a
# record's (a dead letter's key or stage, a product's name, who released a
# hold: up to the megabyte a message may be); status printed each whole.
LINE_CHARS = 1000


def _lines(st: Status) -> list[str]:
    return [bounded(line, LINE_CHARS) for line in _all_lines(st)]


def _all_lines(st: Status) -> list[str]:
    starting = any(p.startswith("starting") for ep in st.endpoints for p in ep.problems)
    sections = [_header(st), _daemons(st.endpoints), _stages(st.stages, st.at),
                _lag(st.broker, starting)]
    if not st.broker.error:
        sections.append(_recent(st.broker, st.at))
    sections.append(parked_lines(st.parked))
    sections.append(_waiting(st))
    return [line for section in sections for line in section]


def _header(st: Status) -> list[str]:
    stamp = dt.datetime.fromtimestamp(st.at, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return [f"calstream status at {stamp}",
            f"broker {st.broker.bootstrap or '(none)'}; topics {st.topic_prefix}*; "
            f"consumer groups {st.group_prefix}.*", ""]


def _daemons(endpoints: list[Endpoint]) -> list[str]:
    out = ["Daemons (metrics endpoints)"]
    if not endpoints:
        out.append("  none given (--metrics-url HOST:PORT, repeatable)")
    for ep in endpoints:
        if not ep.reachable:
            out.append(f"  {ep.url}  UNREACHABLE  {ep.error}")
            continue
        info = next((labels for n, labels, _ in ep.samples if n == "calstream_build_info"), {})
        versions = (f"calstream {info.get('calstream_version', '?')}, jwst "
                    f"{info.get('jwst_version', '?')}, CRDS {info.get('crds_context', '?')}"
                    # Reported once its CRDS context is known (it may wait for CRDS).
                    if info else "starting (CRDS context not resolved yet)")
        out.append(f"  {ep.url}  {'ready' if ep.ready else 'NOT READY'}  {versions}")
        out += [f"      problem: {p}" for p in ep.problems]
        if ep.error:
            out.append(f"      {ep.error}")
    return [*out, ""]


# What a stage's summary may hold, in the order shown: key -> its words.
_STAGE_FACTS: tuple[tuple[str, Callable[[Any, float], str]], ...] = (
    ("in_flight", lambda v, now: f"in flight {v}"),
    ("last_progress", lambda v, now: f"last finished or started {_ago(v, now)}"),
    ("arrivals", lambda v, now: f"announced {sum(v.values())} ({_counts(v)})"),
    ("pending_files", lambda v, now: f"incomplete files in the inbox {v}"),
    ("waiting_alone", lambda v, now: f"waiting for a suspect's run alone: {_counts(v)}"),
    ("runs", lambda v, now: f"runs: {_counts(v)}"),
    ("retries", lambda v, now: f"retries {v}"),
    ("worker_peak_rss_bytes", lambda v, now: f"worker peak RSS {_mib(v)}"),
    ("worker_restarts", lambda v, now: f"worker restarts: {_counts(v)}"),
    ("dead_letters", lambda v, now: f"dead letters: {_counts(v)}"),
)


def _stages(stages: dict[str, dict[str, Any]], now: float) -> list[str]:
    out = ["Work per stage (summed over the daemons above)"]
    if not stages:
        out.append("  no stage reported by the metrics endpoints")
    for name, s in sorted(stages.items()):
        facts = [words(s[key], now) for key, words in _STAGE_FACTS if key in s]
        out.append(f"  {name}: " + "; ".join(facts))
    return [*out, ""]


def _lag_row(row: GroupLag) -> list[str]:
    head = f"  {row.stage}: group {row.group} on {row.topic}"
    if row.error:
        return [f"{head}: {row.error}"]
    members = "" if row.members is None else f"; {row.members} member(s), {row.state}"
    parts = " ".join(f"{p.partition}:{'-' if p.committed is None else p.committed}/{p.high}"
                     for p in row.partitions)
    return [f"{head}: lag {row.lag}{members}", f"      partition:committed/high  {parts}"]


def _lag(b: BrokerView, starting: bool = False) -> list[str]:
    out = ["Consumer lag (from the broker: committed offsets vs high watermarks)"]
    if b.error:
        out.append(f"  broker unavailable: {b.error}")
        if starting:  # an embedded broker starts after CRDS and the work directory
            out.append("  (a daemon above is still starting: its problem says what it waits "
                       "for; its embedded broker starts once CRDS and its work directory are "
                       "there)")
    for row in b.lag:
        out += _lag_row(row)
    return [*out, ""]


def _dead_letter(m: dict[str, Any], now: float) -> str:
    subject = m.get("exposure_id") or (Path(m["path"]).name if m.get("path") else None) \
        or (m.get("original") or {}).get("key") or "-"
    redriven = f"  [redriven {m[REDRIVES]}x]" if m.get(REDRIVES) else ""
    return (f"  {_when(m['emitted_at'], now)}  {m['stage']}/{m['category']}  "
            f"{subject}: {_oneline(m['reason'], 160)}{redriven}")


def _product(m: dict[str, Any], now: float) -> str:
    suffixes = ",".join(o.get("suffix", "?") for o in m.get("outputs", [])) or "-"
    took = f"{m['duration_seconds']:.1f}s" if m.get("duration_seconds") else "-"
    flag = "  pointing PROVISIONAL" if m.get("pointing_provisional") else ""
    return (f"  {_when(m['emitted_at'], now)}  {m['stage']}  {m['outcome']}  "
            f"{m['product_name']}  [{suffixes}]  {took}{flag}")


def _recent(b: BrokerView, now: float) -> list[str]:
    out = []
    for title, events, line in (("dead letters", b.dead_letters, _dead_letter),
                                ("products", b.products, _product)):
        if out:
            out.append("")
        handled = len(events) - len(pending(events)) if title == "dead letters" else 0
        out.append(f"Recent {title} (newest last, up to {len(events)} shown"
                   + (f", {handled} of them redriven" if handled else "") + ")")
        out += [line(m, now) for m in events] or ["  none"]
        if events and title == "dead letters":
            if b.redrives_error:
                out.append(f"  (which were redriven is not known: {_oneline(b.redrives_error, 120)})")
            out.append("  (those not redriven yet: `calstream deadletters list --pending`; "
                       "one whole: `calstream deadletters show REF`)")
    if b.unreadable:
        out.append(f"  ({b.unreadable} record(s) on these topics are not calstream "
                   "messages; skipped)")
    if b.missing_topics:
        out.append(f"  missing topics: {', '.join(b.missing_topics)}")
    return [*out, ""]


def _holds(b: BrokerView, now: float) -> list[str]:
    """Held exposures as `calstream holds list` shows them, with its marks."""
    where = "the planner's ledger" if b.holds_checked else "holds topic"
    if b.holds is None:
        return [f"  held exposures ({where}): unavailable"]
    return [f"  held exposures ({where}): {len(b.holds)}",
            *([f"    note: {b.holds_note}"] if b.holds_note else []),
            *(f"    {h['exposure_id']}  held since {_when(h['since'], now)}: "
              f"{_oneline(h['reason'], 120)}{not_the_planners(h)}" for h in b.holds[:LISTED]),
            *_more(b.holds),
            *(["    (a pointing hold ends with the exposure redelivered corrected, or "
               "`calstream holds release EXPOSURE --reason ...`: its products stay PLANNED)"]
              if b.holds else [])]


_NOT_YET = "not reported yet (the planner starts, or catches up with its history)"


def _planner_metrics(pl: dict[str, Any]) -> list[str]:
    # The hold gauges have no labels, so every daemon exports them (as 0);
    # open_associations is set by a running planner only.
    if "open_associations" not in pl:
        if pl.get("view") is not None:  # /planner answers: the role runs, not decided yet
            return [f"  open associations: {_NOT_YET}"]
        return ["  open associations: not reported (no daemon given runs the planner role)"]
    # The age as the other ages here: a hold of a minute read "oldest 0.0 h".
    held = pl.get("held", 0)
    oldest = f" (the oldest for {_duration(pl.get('oldest_hold_age_seconds', 0))})" \
        if held else ""
    return [f"  held exposures (planner metrics): {held} for pointing{oldest}, "
            f"{pl.get('held_for_direct_image', 0)} WFSS grism(s) for their direct image",
            f"  open associations (planner metrics): {_counts(pl['open_associations'])}"]


def _waiting(st: Status) -> list[str]:
    return ["Held exposures, associations, missing exposures", *_holds(st.broker, st.at),
            *_planner_metrics(st.planner), *_planner_roles(st.planner.get("roles")),
            *_planner_view_or_why(st.planner.get("view"), st.at, st.planner.get("view_error"))]


def _planner_view_or_why(view: dict[str, Any] | None, now: float,
                         unreadable: str | None = None) -> list[str]:
    """The planner's view, or one line saying it could not be read: it is
    what a daemon serves (of another calstream version during an upgrade,
    or whatever answers at a --metrics-url given), and a shape this one
    does not know ended `calstream status` in a traceback, the rest unsaid.
    ``unreadable``: why a /planner that answered could not be read."""
    if view is None and unreadable:
        return [f"  missing exposures: not reported ({_oneline(unreadable, 300)})"]
    try:
        return _planner_view(view, now)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        return [f"  planner view (/planner): not understood ({_oneline(error_text(exc), 120)}"
                "): a daemon of another calstream version?"]


def _missing(stage3: dict[str, Any], tag: str, now: float) -> list[str]:
    missing = stage3.get("missing", {})
    oldest = (f", the oldest for {_duration(stage3.get('oldest_missing_age', 0))}"
              if missing else "")
    ordered = sorted(missing.items(), key=lambda kv: kv[1]["since"])
    count = count_of(stage3, "missing", len(ordered))
    return [f"  missing exposures{tag}: {count}{oldest}",
            *(f"    {eid}  expected since {_ago(m['since'], now)} by "
              f"{', '.join(m['candidates'])}" for eid, m in ordered[:LISTED]),
            *_more(ordered, total=count)]


def _reasons(why: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in why.items())


def _stage2_waiting(ns: dict[str, Any], tag: str) -> list[str]:
    waiting = ns.get("stage2_waiting", {})
    if not waiting:
        return []
    count = count_of(ns, "stage2_waiting", len(waiting))
    return [f"  stage-2 associations waiting{tag}: {count}",
            *(f"    {science}: {_reasons(why) or 'being evaluated'}"
              for science, why in sorted(waiting.items())[:LISTED]),
            *_more(list(waiting), total=count)]


def _candidate(c: dict[str, Any]) -> str:
    why = _reasons(c["waiting_for"]) or f"settling ({c['quiet_for']:.0f}s quiet)"
    sent = f", {c['versions']} version(s) sent" if c["versions"] else ""
    return (f"    {c['candidate']} ({c['asn_type']}, {c['members']} member(s), "
            f"expected by {c['expected_by']}{sent}): {why}")


def _stage3_open(stage3: dict[str, Any], tag: str) -> list[str]:
    candidates = stage3.get("candidates", [])
    if not candidates:
        return []
    count = count_of(stage3, "candidates", len(candidates))
    return [f"  stage-3 candidates open{tag}: {count}",
            *(_candidate(c) for c in candidates[:LISTED]), *_more(candidates, total=count)]


def _stage3_abandoned(stage3: dict[str, Any], tag: str) -> list[str]:
    """Candidates closed with nothing to make (a planner of before sends none)."""
    candidates = stage3.get("abandoned")
    if not candidates or type(candidates) is not list:
        return []
    count = count_of(stage3, "abandoned", len(candidates))
    return [f"  stage-3 candidates abandoned{tag}: {count} (no member has a stage-2 "
            "product; a late one re-opens it: see the dead letters of stage 2)",
            *(f"    {_oneline(c.get('candidate'), 80)} ({c.get('members', '?')} member(s)): "
              f"{_oneline(c.get('reason'), 160)}"
              for c in candidates[:LISTED] if type(c) is dict),
            *_more(candidates, total=count)]


def _planner_roles(roles: list[str] | None) -> list[str]:
    """Under the planner lease: which planner publishes (docs/operations.md)."""
    if not roles or roles == ["active"]:
        return []
    return [f"  planners: {', '.join(roles)}"
            + ("" if roles.count("active") == 1 else "  <- expected exactly one active")]


def _planner_view(view: dict[str, Any] | None, now: float) -> list[str]:
    if not view:
        return ["  missing exposures: not reported (no daemon given serves /planner)"]
    if "namespaces" not in view:  # its daemon starts, or its planner reads its history
        return [*_behind(view), f"  missing exposures: {_NOT_YET}"]
    out = _behind(view)
    if view.get("plans"):
        out.append("  plans loaded: " + "; ".join(
            f"{p['source']} ({p['exposures']} exposures, program {', '.join(p['programs'])})"
            for p in view["plans"]))
    for namespace, ns in sorted(view.get("namespaces", {}).items()):
        tag = "" if namespace == "live" else f" [namespace {namespace}]"
        stage3 = ns.get("stage3", {})
        out += _missing(stage3, tag, now)
        out += _stage2_waiting(ns, tag)
        out += _stage3_open(stage3, tag)
        out += _stage3_abandoned(stage3, tag)
    return out + _unseen(view)


def _unseen(view: dict[str, Any]) -> list[str]:
    """Holds and pointing updates of exposures the planner has no product of:
    only /planner said so (status and the console showed neither)."""
    out = []
    for words, count, names in planner_unseen(view):
        out += [f"  {words}: {count}",
                *(f"    {_oneline(n, 80)}" for n in names[:LISTED]),
                *([f"    ... and {count - min(len(names), LISTED)} more"
                   + (f" (the first {len(names)} in /planner)" if len(names) > LISTED else "")]
                  if count > min(len(names), LISTED) else [])]
    return out


def _behind(view: dict[str, Any]) -> list[str]:
    """The records the planner has yet to decide, where there are any."""
    left = planner_left(view)
    if not left:
        return []
    return ["  planner behind: " + ", ".join(f"{n} record(s) of {_oneline(t, 80)}"
                                             for t, n in left.items())]
