"""``calstream replay``: the command; the replay itself is ``operations/replay.py``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from calstream.daemon.deciders.replay_selection import SOURCES, Selection, parse_when
from calstream.daemon.doers.product_store import check_namespace
from calstream.daemon.operations import replay
from calstream.daemon.operations.cli.registry import (
    DAEMON_FLAGS,
    EXIT_GAP,
    broker_config,
    command,
    operator,
)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", choices=sorted(SOURCES), default="raw",
                   help="raw: everything again from the arrivals (default); stage2/stage3: "
                        "that stage again, from the existing earlier-stage products")
    p.add_argument("--namespace", required=True,
                   help="output namespace (not 'live'): products go to their own tree")
    p.add_argument("--crds-context", help="e.g. jwst_1535.pmap (default: the daemon's)")
    p.add_argument("--since", help="arrival time from (inclusive): RFC 3339, a date, or an age (30m, 2h, 1d)")
    p.add_argument("--until", help="arrival time up to (exclusive), as --since")
    for flag, what in (("program", "5 digits"), ("observation", "3 digits"),
                       ("visit", "3 digits"), ("exposure", "exposure id / product name"),
                       ("instrument", "e.g. NIRCAM"), ("exp-type", "e.g. NRC_IMAGE")):
        p.add_argument(f"--{flag}", action="append", help=f"{what}; repeatable")
    p.add_argument("--dry-run", action="store_true", help="list what would run; publish nothing")
    p.add_argument("--allow-gap", action="store_true",
                   help="replay what is retained even if the range reaches past retention")
    p.add_argument("--json", action="store_true", help="the report as JSON")


NO_DATE = "(no date)"  # a broker timestamp that names none (replay_selection.record_time)


def _print_report(report: dict[str, Any], out=None) -> None:
    # sys.stdout as it is now, not as it was at import (a test's capture).
    out = out if out is not None else sys.stdout
    verb = "would replay" if report["dry_run"] or report["refused"] else "replayed"
    print(f"replay {report['replay_id']}: {verb} {report['selected']} item(s) from "
          f"{report['source_topic']} into namespace {report['namespace']} "
          f"(CRDS context {report['crds_context'] or 'the daemon default'}) via "
          f"{report['target_topic']}", file=out)
    print(f"  scanned {report['scanned']} record(s), {report['matched']} matched, "
          f"{report['superseded']} superseded by a later message for the same item, "
          f"{report['invalid_skipped']} invalid skipped; published {report['published']}",
          file=out)
    if report["outside_roots"]:
        print(f"  {report['outside_roots']} record(s) left out: they name a file outside the "
              "inbox roots, or an input that is no live product of its own program (forged, or from another "
              "deployment)", file=out)
        roots = ", ".join(report["inbox_roots"] or []) or "-"
        print(f"    inbox roots judged by: {roots} ({report['inbox_roots_from']})", file=out)
    if report.get("disagreeing_unread"):
        print(f"  {report['disagreeing_unread']} exposure(s) with arrivals that disagree (path, "
              "digest, size or header copy): the later one taken, their files not read, for "
              f"this command knows no inbox roots ({report['inbox_roots_from']})", file=out)
    if report["too_large"]:
        print(f"  {report['too_large']} record(s) left out: with their replay they would be "
              "over the 1 MB every reader takes (a header copy that large: forged, or a "
              f"file's to look at), e.g. {', '.join(report['too_large_items'][:3])}", file=out)
    if report["from_store"] or report["store_records_unusable"]:
        print(f"  {report['from_store']} arrival(s) the topic lacks made again from the product "
              f"store's detector1 records ({report['store_records_unusable']} record(s) too "
              "broken to make one)", file=out)
    print(f"  {'part':>4} {'retained from':>13} {'high':>6} {'count':>5}  "
          f"{'first offset/time':32} last offset/time", file=out)
    for p in report["partitions"]:
        first = f"{p['first_offset']} {p['first_time'] or NO_DATE}" if p["count"] else "-"
        last = f"{p['last_offset']} {p['last_time'] or NO_DATE}" if p["count"] else "-"
        print(f"  {p['partition']:>4} {p['log_start_offset']:>13} {p['high_watermark']:>6} "
              f"{p['count']:>5}  {first:32} {last}", file=out)
    if report["dry_run"]:
        for item in report["items"]:
            where = f"[{item['partition']}]@{item['offset']}" if item.get("from") is None \
                else f"[{item['from']}]"
            print(f"  {item['name']}  {where}  {item['time'] or NO_DATE}", file=out)


@command("replay", "reprocess a selection into a namespace, at low priority",
         description=replay.__doc__, raw_description=True, flags=(*DAEMON_FLAGS, "--by"),
         arguments=_arguments)
def cmd_replay(args: argparse.Namespace) -> int:
    cfg = broker_config(args, "replay")
    namespace = check_namespace(args.namespace, allow_live=False)
    selection = Selection(
        since=parse_when(args.since), until=parse_when(args.until),
        programs=set(args.program or ()), observations=set(args.observation or ()),
        visits=set(args.visit or ()), exposures=set(args.exposure or ()),
        instruments=set(args.instrument or ()), exp_types=set(args.exp_type or ()))
    report = anyio.run(lambda: replay.run_replay(
        cfg, source=args.source, selection=selection, namespace=namespace,
        crds_context=args.crds_context, dry_run=args.dry_run, allow_gap=args.allow_gap,
        by=operator(args)))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_report(report)
    if report["gaps"]:
        bar = "!" * 78
        lines = [bar, "REPLAY RANGE NOT FULLY COVERED: the source topic no longer holds all "
                 "that was asked for", *(f"  {g}" for g in report["gaps"])]
        lines.append("  nothing was published; re-run with --allow-gap to replay what is "
                     "retained" if report["refused"] else
                     "  --allow-gap: what is retained was replayed; the rest is NOT covered")
        print("\n".join([*lines, bar]), file=sys.stderr)
        return 0 if args.allow_gap else EXIT_GAP
    if not report["selected"]:
        print("replay: nothing matched the selection", file=sys.stderr)
    return 0
