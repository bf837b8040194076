"""``calstream holds list`` and ``calstream holds release``: pointing holds for operators.

What they show is what the planner believes: its own records, from its
ledger, when the command is given the planner's work directory (the
embedded default's ``--work-dir``); the holds topic's last record of an
exposure only beside it, marked, when it says otherwise (anyone who can
write to the broker can write one, and the planner takes no release it
did not decide: deciders/holds.py, ``hold_to_restore``). Run where the
ledger is not, they show the topic's records, marked as not checked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import anyio

from calstream.daemon.deciders.holds import holds_shown
from calstream.daemon.doers import kafka
from calstream.daemon.doers.message_sender import send_messages
from calstream.daemon.doers.planner_disk_records import planner_holds_at
from calstream.daemon.operations.cli.registry import (
    DAEMON_FLAGS,
    broker_config,
    command,
    group,
    operator,
    reason_argument,
)
from calstream.daemon.operations.logs import escape_controls
from calstream.topics import contract
from calstream.topics.catalog import Topics

group("holds", "exposures held for provisional pointing (ENGQLPTG=PLANNED)")


async def current_holds(cfg, topics: Topics) -> dict[str, dict]:
    """The hold of each exposure as the planner has it, where its ledger is
    reachable (``cfg.work_dir``), else the holds topic's last record
    (deciders/holds.py, ``holds_shown``, says how each row is marked)."""
    on_topic = last_holds(await kafka.read_to_end(cfg, topics.name("holds")))
    own = await anyio.to_thread.run_sync(planner_holds_at, cfg.work_dir)
    return holds_shown(on_topic, own)


def last_holds(records) -> dict[str, dict]:
    """The last hold record per exposure of the holds topic's ``records``."""
    latest: dict[str, dict] = {}
    for record in records:
        if record.value is None:  # a tombstone: its key is anyone's bytes, or none
            latest.pop(record.key.decode("utf-8", "replace") if record.key else "", None)
            continue
        try:
            hold = contract.decode(record.value, expected="hold")
        except contract.InvalidMessage:
            continue
        latest[hold["exposure_id"]] = hold.body
    return latest


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
    holds = anyio.run(current_holds, cfg, Topics(cfg.topic_prefix))
    rows = [h for h in holds.values() if args.all or h["state"] == "held"]
    if any(not h["checked"] for h in holds.values() if h["source"] == "holds topic"):
        print(f"calstream: no planner's ledger in {cfg.work_dir}: these are the holds topic's "
              "records, not checked against what the planner holds (give the planner "
              "daemon's --work-dir)", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no exposures held" if not args.all else "no holds recorded")
        return 0
    print(f"{'exposure':34} {'state':9} {'since':25} {'age':>7}  reason / release")
    for h in sorted(rows, key=lambda h: h["since"]):
        print(hold_row(h))
    return 0


def hold_row(h: dict) -> str:
    """One hold, one line, escaped: the holds topic is anyone's to write, and
    no control sequence (or lone surrogate) reaches the terminal."""
    release = h.get("release") or {}
    detail = (f"{release['path']}: {release.get('reason') or ''}"
              f"{' by ' + release['by'] if release.get('by') else ''}"
              if release else h["reason"])
    return escape_controls(f"{h['exposure_id']:34} {h['state']:9} {h['since']:25} "
                           f"{_age(h['since']):>7}  {detail}{_not_the_planners(h)}")


def _not_the_planners(h: dict) -> str:
    """The row's mark when the holds topic says what the planner did not."""
    theirs = h.get("holds_topic")
    if theirs is not None:
        by = (theirs.get("release") or {}).get("by")
        return (f"  [the holds topic says {theirs.get('state')}{' by ' + by if by else ''}: "
                "not the planner's record]")
    if h.get("source") == "holds topic" and h.get("checked"):
        return "  [the holds topic's record: the planner has none of this exposure]"
    return ""


def _release_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exposure", help="exposure id, e.g. jw01234001001_02101_00003_nrcb1")
    p.add_argument("--reason", required=True, type=reason_argument,
                   help="why (recorded with the products)")


@command("holds release", "release a hold explicitly (products stay PLANNED)",
         flags=(*DAEMON_FLAGS, "--by"), arguments=_release_arguments)
def cmd_release(args: argparse.Namespace) -> int:
    cfg = broker_config(args, "holds")
    topics = Topics(cfg.topic_prefix)
    holds = anyio.run(current_holds, cfg, topics)
    hold = holds.get(args.exposure)
    if hold is not None and hold["source"] == "holds topic" and hold["checked"]:
        hold = None  # the planner holds nothing of it: a release would be rejected
    if hold is None or hold["state"] != "held":
        state = hold["state"] if hold else "not known to the planner"
        # An error: on stderr, as every command's (stdout is the result's).
        print(f"calstream: {args.exposure} is not held ({state}); nothing to release",
              file=sys.stderr)
        return 1
    if hold.get("waiting_for"):
        # Escaped as the rows of `holds list`: the reason is the topic's text.
        print(escape_controls(f"calstream: {args.exposure} waits for its {hold['waiting_for']} "
                              f"({hold['reason']}); the planner releases it when that comes, "
                              "not an operator"), file=sys.stderr)
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
