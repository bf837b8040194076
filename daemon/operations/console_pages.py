"""The console's pages: server-rendered HTML, no script, one stylesheet inline.

Each page is a pure function of a snapshot (console_data) and the request's
query: the index of programs and observations, and a page per observation
with its exposures' timelines (paged), holds, open associations, missing
exposures, dead letters and stage-3 products with their previews.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from html import escape
from pathlib import Path
from typing import Any

from calstream.daemon.operations.console_data import (
    PER_STAGE,
    Observation,
    Snapshot,
    member_names,
)
from calstream.daemon.operations.dead_letter_redrives import REDRIVES, pending
from calstream.daemon.operations.holds_view import not_the_planners
from calstream.daemon.operations.logs import escape_controls
from calstream.daemon.operations.parked_causes import next_step
from calstream.daemon.operations.status_summary import planner_cut, planner_left, planner_unseen
from calstream.topics import contract
from calstream.topics.dead_letters import TEXT_BUDGET, bounded

PAGE_SIZE = 100
ROOT = "/console"

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em} table.timeline{width:100%}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top;
white-space:nowrap} td.why{white-space:normal;overflow-wrap:anywhere;min-width:12em}
th{background:#eee} .num{text-align:right} .held{background:#fff3cd}
.dead{background:#f8d7da} .missing{background:#e2e3e5} .ok{color:#155724}
.muted{color:#777} img.thumb{height:48px;image-rendering:pixelated;margin-right:2px}
nav a{margin-right:1em} .error{color:#a00}
"""


# Characters of one text shown: a record's texts are anyone's, up to the
# megabyte a message may be (a hold's reason, a forged dead letter's), and
# an observation page showed each whole, twice (timeline and table) for each
# of up to 100 rows: a page of hundreds of megabytes, built in memory.
SHOWN_CHARS = TEXT_BUDGET


def _e(value: Any) -> str:
    # Control characters as the CLI shows them (a file named with an escape
    # sequence reached the page raw, invisible): records anyone may write.
    text = bounded("" if value is None else str(value), SHOWN_CHARS)
    return escape(escape_controls(text, keep_breaks=True))


def _link(path: str, text: str, **query: Any) -> str:
    q = urllib.parse.urlencode({k: v for k, v in query.items() if v not in (None, "live")})
    return f'<a href="{_e(ROOT + path + ("?" + q if q else ""))}">{_e(text)}</a>'


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes = seconds / 60
    return f"{minutes:.0f}m" if minutes < 120 else f"{minutes / 60:.1f}h"


def _ago(t: float | None, now: float) -> str:
    return "-" if t is None else f"{_age(now - t)} ago"


def _since(iso: str | None, now: float) -> str:
    return "-" if not iso else _age(now - contract.parse_time(iso).timestamp())


def _time(iso: str | None, *, date: bool = True) -> str:
    """UTC, to the second; the full time as written on hover. Converted: the
    text's first 19 characters were shown as UTC whatever its offset (the
    contract allows any), ``05:00+02:00`` as 05:00 for 03:00."""
    if not iso:
        return "-"
    try:
        shown = contract.parse_time(iso).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError):  # a file's text, of no time: as it is
        shown = str(iso)[:19]
    return f'<span title="{_e(iso)}">{_e(shown if date else shown[11:])}</span>'


def page(title: str, body: str, snap: Snapshot) -> bytes:
    ns = "".join(f" {_link('/', n, ns=n)}" + (" (current)" if n == snap.current else "")
                 for n in snap.namespaces)
    error = f'<p class="error">broker: {_e(snap.error)}</p>' if snap.error else ""
    if snap.store_error:
        error = f'<p class="error">{_e(snap.store_error)}</p>' + error
    if snap.left_out:
        error += (f'<p class="error">{snap.left_out} provenance record(s) in the product store '
                  "hold no product event calstream could have written (edited, or of another "
                  "tree): not shown</p>")
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><nav>{_link('/', 'calstream console')}"
            f"<span class='muted'>namespace <b>{_e(snap.namespace)}</b> · namespaces:{ns} · "
            f"as of {time.strftime('%H:%M:%S', time.gmtime(snap.at))} UTC</span></nav>"
            f"<h1>{_e(title)}</h1>{error}{body}</body></html>")
    # A record's free text may hold a lone surrogate (a "\ud800" escape, or a
    # file name that is not UTF-8): shown escaped, where it failed the page.
    return html.encode("utf-8", "backslashreplace")


def no_observation(snap: Snapshot, program: str, observation: str) -> bytes:
    """The page for an observation the console does not know. Its names come
    from the request's path, which is anyone's text: written raw, a link to
    /console/program/<img src=x onerror=...>/001 put markup in the page."""
    return page("not found", f"<p>no observation {_e(program)}/{_e(observation)} in "
                f"namespace {_e(snap.namespace)}</p>", snap)


def _table(headers: list[str], rows: list[str], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return (f'<table class="{cls}"><tr>{head}</tr>{"".join(rows)}</table>' if rows
            else '<p class="muted">none</p>')


def _page_number(query: dict[str, list[str]], pages: int) -> int:
    try:
        return min(max(1, int(query.get("page", ["1"])[0])), pages)
    except ValueError:
        return 1


def _paged(items: list, query: dict[str, list[str]]) -> tuple[list, int, int]:
    """(the items of the page asked for, its number, how many pages)."""
    pages = max(1, -(-len(items) // PAGE_SIZE))
    number = _page_number(query, pages)
    return items[(number - 1) * PAGE_SIZE: number * PAGE_SIZE], number, pages


def _nav(base: str, snap: Snapshot, number: int, pages: int) -> str:
    return " ".join(_link(base, str(n), ns=snap.namespace, page=n) if n != number
                    else f"<b>{n}</b>" for n in range(1, pages + 1)) if pages > 1 else ""


def _more(rows: list[str], total: int, where: str) -> list[str]:
    """``rows`` (the first PAGE_SIZE of ``total``), then a row saying where the rest are."""
    if total <= len(rows):
        return rows
    return [*rows, f'<tr><td colspan="4" class="muted">the first {len(rows)} of {total} '
                   f"shown; {_e(where)} lists them all</td></tr>"]


def index(snap: Snapshot, query: dict[str, list[str]] | None = None) -> bytes:
    # Paged as an observation's exposures are: a store of years holds tens
    # of thousands of observations, and the front page was a row of each.
    observations, number, pages = _paged(list(snap.observations.values()), query or {})
    rows = []
    for obs in observations:
        c = obs.counts()
        rows.append(
            f"<tr><td>{_e(obs.program)}</td><td>"
            f"{_link(f'/program/{obs.program}/{obs.observation}', obs.observation, ns=snap.namespace)}"
            f"</td>" + "".join(f'<td class="num">{c[k]}</td>' for k in (
                "exposures", "detector1", "stage2", "stage3", "held", "missing", "waiting"))
            + f'<td class="num">{_letters_cell(c)}</td></tr>')
    body = (f"<h2>Programs and observations ({len(snap.observations)}; page {number} of "
            f"{pages})</h2><p>{_nav('/', snap, number, pages)}</p>" + _table(
        ["program", "observation", "exposures", "detector1", "stage 2", "stage-3 products",
         "held", "missing", "open associations", "dead letters"], rows)
        + "<h2>Planner</h2>" + _planner(snap)
        + "<h2>Parked on an infrastructure fault (resumed by themselves)</h2>" + _parked(snap)
        + "<h2>Recent dead letters</h2>" + _dead_letters(snap.dead_letters[-20:][::-1])
        + "<h2>Replay namespaces and promotions</h2>" + _namespaces(snap))
    return page("calstream console", body, snap)


def _namespaces(snap: Snapshot) -> str:
    rows = [f"<tr><td>{_link('/', n, ns=n)}</td><td>{'current' if n == snap.current else ''}"
            f"</td></tr>" for n in snap.namespaces]
    promotions = [f"<tr><td>{_time(p['promoted_at'])}</td><td>{_e(p['previous'])} → "
                  f"{_e(p['namespace'])}</td><td>{_e(p['records'])}</td><td>{_e(p['by'])}</td>"
                  f"<td>{_e(p['reason'])}</td></tr>" for p in snap.promotions[::-1]]
    # None: <products>/current is there but no link promote makes (a directory).
    odd = ('<p class="error">&lt;products&gt;/current is not the link <code>calstream promote'
           '</code> makes: which namespace readers get is not known here</p>'
           if snap.current is None else "")
    return (odd + _table(["namespace", ""], rows) + "<h3>Promotions</h3>"
            + _table(["promoted at", "from → to", "work items", "by", "reason"], promotions))


def _planner(snap: Snapshot) -> str:
    """Whether the planner keeps up: caught up or catching up, and the
    records it has yet to decide (what `calstream status` says)."""
    view = ((snap.status.planner if snap.status else None) or {}).get("view")
    if not isinstance(view, dict):
        why = ((snap.status.planner if snap.status else None) or {}).get("view_error")
        return (f'<p class="error">not reported ({_e(why)})</p>' if why else
                '<p class="muted">not reported (no daemon given serves /planner)</p>')
    left = planner_left(view)
    state = "caught up" if view.get("caught_up") is True else "catching up with its history"
    behind = ", ".join(f"{n} record(s) of {t}" for t, n in left.items())
    # Of exposures it has no product of: named nowhere else on the pages
    # (their observations are the products' and the holds').
    unseen = "".join(
        f'<p class="held">{_e(words)}: {count}</p><p>'
        f'{", ".join(_e(n) for n in names)}'
        f'{_e(f" ... and {count - len(names)} more") if count > len(names) else ""}</p>'
        for words, count, names in planner_unseen(view))
    cut = "".join(f'<p class="muted">{_e(_cut_words(*c))}</p>' for c in planner_cut(
        view, snap.namespace))
    return (f'<p class="{"held" if left else "muted"}">{_e(state)}; '
            f'{_e(behind + " left to decide" if left else "nothing left to decide")}</p>'
            + unseen + cut)


def _cut_words(words: str, listed: int, count: int) -> str:
    return (f"{words}: {count}; the planner lists the first {listed}, and only those are on "
            "the observations' pages (`calstream status` counts them all)")


def _parked(snap: Snapshot) -> str:
    parked = snap.status.parked if snap.status else []
    rows = [f'<tr class="held"><td>{_e(p["stage"])}</td><td>{_e(p["cause"])}</td>'
            f'<td>{_e(p.get("root") or "-")}</td>'
            f'<td class="num">{_e(p["items"])}</td><td class="why">{_e(next_step(p["cause"]))}'
            f'</td></tr>' for p in parked]
    return _table(["stage", "cause", "writing under", "items",
                   "what clears it (the daemon's log has each item's error)"], rows)


def _letters_cell(counts: dict[str, int]) -> str:
    """Those that need someone, and apart those already redriven (handled)."""
    redriven = counts["redriven"]
    return f"{counts['dead_letters']}" + (f" (+{redriven} redriven)" if redriven else "")


def _redriven(letter: dict[str, Any]) -> str:
    return f"redriven {letter[REDRIVES]}x" if letter.get(REDRIVES) else ""


def _dead_letters(letters: list[dict[str, Any]]) -> str:
    rows = [f'<tr class="{"" if d.get(REDRIVES) else "dead"}"><td>{_time(d.get("emitted_at"))}'
            f'</td><td>{_e(d.get("stage"))}'
            f'</td><td>{_e(d.get("exposure_id") or Path(d.get("path") or "-").name)}</td>'
            f'<td>{_e(d.get("category"))}</td><td class="why">{_e(d.get("reason"))}</td>'
            f'<td class="num">{_e(d.get("attempts"))}</td><td>{_redriven(d)}</td></tr>'
            for d in letters]
    return _table(["at", "stage", "exposure / file", "category", "reason", "attempts",
                   "redriven"], rows)


def _thumbnails(event: dict[str, Any] | None) -> str:
    """Each thumbnail links to its full preview (served by /console/preview)."""
    if not event:
        return ""
    previews = event.get("previews") or []
    full = {p["of"]: p["path"] for p in previews if p.get("role") == "preview"}
    out = []
    for p in previews:
        # A path longer than a path may be names no file: no link of its size.
        if p.get("role") == "thumbnail" and len(full.get(p["of"], p["path"])) <= SHOWN_CHARS \
                and len(p["path"]) <= SHOWN_CHARS:
            thumb = urllib.parse.quote(p["path"])
            big = urllib.parse.quote(full.get(p["of"], p["path"]))
            out.append(f'<a href="{ROOT}/preview?path={big}"><img class="thumb" '
                       f'src="{ROOT}/preview?path={thumb}" alt="{_e(p["of"])}" '
                       f'title="{_e(p["of"])}"></a>')
    return "".join(out)


def _stage_cell(event: dict[str, Any] | None) -> str:
    if not event:
        return '<td class="muted">-</td>'
    took = event.get("duration_seconds")
    state = "skipped" if event.get("outcome") == "skipped" else "done"
    if event.get("stage") in ("dark", "guider"):  # in detector1's column: say which ran
        state += f" ({_e(event.get('pipeline'))})"
    return (f'<td><span class="ok">{state}</span> {_time(event.get("emitted_at"), date=False)}'
            f'{f" ({_age(took)})" if took is not None else ""}<br>{_thumbnails(event)}</td>')


def observation_page(snap: Snapshot, obs: Observation, query: dict[str, list[str]]) -> bytes:
    now = time.time()
    exposures = obs.ordered()
    shown, number, pages = _paged(exposures, query)
    rows = []
    for exp in shown:
        cls = "held" if exp.hold else "dead" if pending(exp.dead_letters) else ""
        hold = (f"held: {_e(exp.hold.get('reason'))} (for {_since(exp.hold.get('since'), now)})"
                f"{_e(not_the_planners(exp.hold))}" if exp.hold else "")
        dead = "; ".join(f"dead letter ({_e(d.get('stage'))}): {_e(d.get('reason'))}"
                         + (f" ({_redriven(d)})" if d.get(REDRIVES) else "")
                         for d in exp.dead_letters)
        rows.append(
            f'<tr class="{cls}" id="{_e(exp.exposure_id)}"><td>{_e(exp.exposure_id)}</td>'
            f"<td>{_time(exp.arrived_at)}</td>"
            + "".join(_stage_cell(exp.stages.get(s)) for s in PER_STAGE)
            + f"<td>{'<br>'.join(_e(n) for n in exp.stage3) or '-'}</td>"
            f'<td class="num">{_age(exp.latency)}</td><td class="why">{hold}'
            f'{"<br>" if hold and dead else ""}'
            f"{dead}</td></tr>")
    nav = _nav(f"/program/{obs.program}/{obs.observation}", snap, number, pages)
    held = [e for e in exposures if e.hold]
    body = (
        f"<h2>Exposures ({len(exposures)}; page {number} of {pages})</h2><p>{nav}</p>"
        + _table(["exposure", "arrived", "detector1", "stage 2", "stage 3", "latency",
                  "hold / failure"], rows, "timeline")
        # Those two lists are an observation's whole (thousands held after an
        # outage of the pointing data): bounded as the timeline is.
        + f"<h2>Held ({len(held)})</h2>" + _holds_note(snap)
        + _table(["exposure", "reason", "since", "age"], _more([
            f'<tr class="held"><td>{_e(e.exposure_id)}</td>'
            f'<td class="why">{_e(e.hold.get("reason"))}{_e(not_the_planners(e.hold))}</td>'
            f"<td>{_time(e.hold.get('since'))}</td><td>{_since(e.hold.get('since'), now)}</td>"
            "</tr>" for e in held[:PAGE_SIZE]], len(held), "calstream holds list"))
        + f"<h2>Missing exposures ({len(obs.missing)})</h2>"
        + _table(["exposure", "expected since", "by"], _more([
            f'<tr class="missing"><td>{_e(eid)}</td><td>{_ago(m["since"], now)}'
            f"</td><td>{_e(', '.join(m['candidates']))}</td></tr>"
            for eid, m in sorted(obs.missing.items())[:PAGE_SIZE]], len(obs.missing),
            "the planner daemon's /planner"))
        + f"<h2>Open associations ({len(obs.waiting)})</h2>"
        + _table(["association", "waits for"], [
            f"<tr><td>{_e(w['association'])}</td><td class='why'>"
            + "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in w["waiting_for"].items())
            + "</td></tr>" for w in obs.waiting])
        + "<h2>Stage-3 products</h2>"
        + _table(["product", "version", "done", "members", "degraded", "previews"], [
            f"<tr><td>{_e(p['product_name'])}</td><td>{_e(p.get('version', 1))}</td>"
            f"{_stage_cell(p)}<td class='num'>"
            f"{len(member_names(p))}</td>"
            f"<td>{_e(p.get('degraded') or '')}</td><td>{_thumbnails(p)}</td></tr>"
            for p in obs.stage3])
        + "<h2>Dead letters</h2>"
        + _dead_letters([d for e in exposures for d in e.dead_letters] + obs.dead_letters))
    return page(f"Program {obs.program}, observation {obs.observation}", body, snap)


def _holds_note(snap: Snapshot) -> str:
    """Why the holds shown are the topic's, not checked against the planner's ledger."""
    note = snap.status.broker.holds_note if snap.status else None
    return f'<p class="muted">{_e(note)}</p>' if note else ""
