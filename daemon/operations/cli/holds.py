"""``calstream holds list`` and ``calstream holds release``: pointing holds for operators.

What they show is what the planner believes, as status and the console
show it (operations/holds_view.py): its own records where its ledger is
reachable, the holds topic's beside them, marked, when it says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import anyio

from calstream.daemon.doers.message_sender import send_messages
from calstream.daemon.operations.cli.registry import (
    DAEMON_FLAGS,
    broker_config,
    command,
    group,
    operator,
    reason_argument,
)
from calstream.daemon.operations.holds_view import (
    by_since,
    current_holds,
    not_the_planners,
)
from calstream.daemon.operations.logs import escape_controls
from calstream.daemon.operations.status_render import LINE_CHARS
from calstream.topics import contract
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import REASON_BUDGET, bounded

group("holds", "exposures held for provisional pointing (ENGQLPTG=PLANNED)")


def _age(since: str) -> str:
    seconds = max(0.0, time.time() - contract.parse_time(since).timestamp())
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="released holds too")
    p.add_argument("--json", action="store_true")


@command("holds list", "what is held, since when and why", flags=DAEMON_FLAGS,
         arguments=_list_arguments)
def cmd_list(args: argparse.Namespace) -> int:
    cfg = broker_config(args, "holds")
    holds, note = anyio.run(current_holds, cfg, Topics(cfg.topic_prefix))
    rows = sorted((h for h in holds.values() if args.all or h["state"] == "held"), key=by_since)
    if note:
        print(f"calstream: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no exposures held" if not args.all else "no holds recorded")
        return 0
    print(f"{'exposure':34} {'state':9} {'since':25} {'age':>7}  reason / release")
    for h in rows:
        print(hold_row(h))
    return 0


def hold_row(h: dict) -> str:
    """One hold, one line, escaped: the holds topic is anyone's to write, and
    no control sequence (or lone surrogate) reaches the terminal."""
    release = h.get("release") or {}
    # Bounded: a hold's reason is up to the megabyte a record may be.
    detail = bounded(f"{release['path']}: {release.get('reason') or ''}"
                     f"{' by ' + release['by'] if release.get('by') else ''}"
                     if release else h["reason"], REASON_BUDGET)
    return escape_controls(f"{h['exposure_id']:34} {h['state']:9} {h['since']:25} "
                           f"{_age(h['since']):>7}  {detail}{not_the_planners(h)}")


def waits_refusal(exposure: str, hold: dict) -> str:
    """Why `holds release` does not release a hold that waits for something
    the planner releases it on (a WFSS grism's direct image), escaped as
    the rows of `holds list` and bounded as a line of `calstream status`:
    its reason is a record's text, up to the megabyte a record may be, and
    was printed whole; cut here, the line's end (what to do) still shows."""
    return escape_controls(
        f"calstream: {exposure} waits for its {bounded(str(hold['waiting_for']), 80)} "
        f"({bounded(str(hold['reason']), LINE_CHARS // 2)}); the planner releases it when "
        "that comes, not an operator")


# Records of the products topic `holds release` looks through, newest first,
# for an exposure it holds nothing of: enough for weeks of arrivals, and a
# bounded wait for an operator who mistyped an id on a topic of months.
NEVER_HELD_SEARCH = 200_000


async def _never_held(cfg, topics: Topics, exposure: str,
                      search: int = NEVER_HELD_SEARCH) -> str:
    """What is true of an exposure with no hold: the planner knows it (a
    product event of it is on the products topic, which the planner reads)
    and never held it, or it does not. Both said "not known to the
    planner", which sent an operator looking for an exposure that was there.
    The topic is read newest first a window at a time (a topic of months
    was read whole into memory), up to ``search`` records."""
    from calstream.daemon.doers.kafka.newest_first import NewestFirst

    needle, looked = exposure.encode(), 0
    async with NewestFirst(cfg, topics.name("products"),
                           when=lambda r: (r.timestamp, r.offset), window=min(search, 500)) as reader:
        while looked < search and (record := await reader.next()) is not None:
            looked += 1
            if record.value is None or needle not in record.value:  # most, without decoding
                continue
            try:
                event = contract.decode(record.value, expected="product")
            except contract.InvalidMessage:
                continue
            if event.get("exposure_id") == exposure:
                return (f"known to the planner, never held: its {event['stage']} product "
                        "event is on the products topic")
        older = reader.left()
    if older:
        return (f"not known to the planner: no product event of it in the newest "
                f"{looked} records of the products topic ({older} older not read)")
    return "not known to the planner: no product event of it on the products topic"


def _release_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exposure", help="exposure id, e.g. jw01234001001_02101_00003_nrcb1")
    p.add_argument("--reason", required=True, type=reason_argument,
                   help="why (recorded with the products)")


@command("holds release", "release a hold explicitly (products stay PLANNED)",
         flags=(*DAEMON_FLAGS, "--by"), arguments=_release_arguments)
def cmd_release(args: argparse.Namespace) -> int:
    cfg = broker_config(args, "holds")
    topics = Topics(cfg.topic_prefix)
    holds, _ = anyio.run(current_holds, cfg, topics)
    hold = holds.get(args.exposure)
    if hold is not None and hold["source"] == "holds topic" and hold["checked"]:
        hold = None  # the planner holds nothing of it: a release would be rejected
    if hold is None or hold["state"] != "held":
        state = hold["state"] if hold else anyio.run(_never_held, cfg, topics, args.exposure)
        # An error: on stderr, as every command's (stdout is the result's).
        print(f"calstream: {args.exposure} is not held ({state}); nothing to release",
              file=sys.stderr)
        return 1
    if hold.get("waiting_for"):
        print(waits_refusal(args.exposure, hold), file=sys.stderr)
        return 1
    by = operator(args)
    update = contract.build(
        "pointing_update", contract.event_id("pointing_update", "release", args.exposure,
                                             hold["digest"], args.reason, by),
        exposure_id=args.exposure, action="release", reason=args.reason, by=by,
        digest=hold["digest"], source="calstream holds release")
    anyio.run(send_messages, cfg, topics.name("pointing"), [(args.exposure, update)])
    print(f"release of {args.exposure} requested (by {by}: {args.reason}); the planner "
          "records it on the holds topic. Its products keep ENGQLPTG=PLANNED.")
    return 0
