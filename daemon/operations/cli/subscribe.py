"""``calstream subscribe``: the example subscriber (``operations/subscribe.py``) as a command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from calstream.daemon.operations.cli.registry import (
    BROKER_FLAGS,
    broker_config,
    command,
    count_argument,
    seconds_argument,
)
from calstream.daemon.operations.config import ConfigError
from calstream.daemon.operations.subscribe import Subscriber
from calstream.topics import contract


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", help="consumer group: commit after handling, resume there on "
                                   "restart (default: no group, read from the beginning)")
    f = p.add_argument_group("filters (repeatable; an event must match every option given)")
    f.add_argument("--program", action="append", help="e.g. 01234")
    f.add_argument("--observation", action="append", help="e.g. 001")
    f.add_argument("--stage", action="append", help="detector1, stage2, stage3, ...")
    f.add_argument("--pipeline", action="append", help="e.g. calwebb_image2")
    f.add_argument("--namespace", action="append",
                   help="'live', or a reprocessing's namespace (default: every namespace)")
    f.add_argument("--suffix", action="append", help="has an output with this suffix, e.g. cal")
    f.add_argument("--exposure", action="append", help="exposure id, e.g. "
                                                       "jw01234001001_02101_00001_nrcb1")
    f.add_argument("--since", metavar="TIME",
                   help="emitted at or after TIME (ISO 8601; UTC when no zone is given)")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=("json", "text"), default="json",
                   help="one JSON object per line (default) or a short line for humans")
    o.add_argument("--write-dir", type=Path, metavar="DIR",
                   help="write each event to DIR/<event_id>.json (atomically) instead")
    s = p.add_argument_group("stopping (default: run until interrupted)")
    s.add_argument("--max", type=count_argument(1), metavar="N", help="stop after N events delivered")
    s.add_argument("--until-idle", type=seconds_argument, metavar="SECONDS",
                   help="stop when no record has come for SECONDS")


@command("subscribe", "example subscriber: print or write product events, with filters",
         description="Read product events (at-least-once, deduplicated on event_id within this "
                     "run, on the most recent 200,000 ids), validate each against the contract, keep those matching every "
                     "filter given, and print them as JSON lines (default), as text, or write "
                     "them to a directory. Invalid records are reported on stderr and skipped.",
         flags=(*BROKER_FLAGS, "--work-dir"),
         flag_overrides={"--work-dir": dict(help="a deployment's work dir: its broker is read "
                                                 "from WORK/deployment.json")},
         arguments=_arguments)
def cmd_subscribe(args: argparse.Namespace) -> int:
    cfg = broker_config(args, "subscribe")
    if args.since:
        try:
            contract.parse_time(args.since)
        except ValueError:
            raise ConfigError(f"--since {args.since!r} is not an ISO 8601 time") from None
    if args.write_dir:
        try:
            args.write_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file there, a place it may not write: mkdir's traceback
            raise ConfigError(f"--write-dir {args.write_dir}: not a directory this command can "
                              f"make or use ({exc.strerror or exc})") from None
    sub = Subscriber(cfg, args)
    anyio.run(sub.run_until_signal)
    c = sub.counts
    print(f"subscribe: {c['delivered']} event(s) delivered; {c['duplicate']} duplicate(s), "
          f"{c['filtered']} filtered out, {c['invalid']} invalid"
          + (f", {c['conflicting']} conflicting" if c["conflicting"] else "")
          + (f", {c['commits_refused']} commit(s) refused by the group" if c["commits_refused"]
             else "")
          + (f"; the broker was lost {c['broker_lost']} time(s)" if c["broker_lost"] else ""),
          file=sys.stderr)
    return 0
