"""``calstream plan load`` and ``calstream plan list``: tell the planner what will come.

A plan (a jwst association pool or a manifest, ``steps/plans.py``) is
published on the plans topic; the planner reads it (now, and again after
every restart) and closes the stage-3 candidates it covers the moment their
last planned member is calibrated, instead of waiting for a quiet period.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anyio

from calstream.daemon.doers import kafka
from calstream.daemon.doers.message_sender import send_messages
from calstream.daemon.operations.cli.registry import (
    DAEMON_FLAGS,
    broker_config,
    command,
    deployment_config,
    group,
    operator,
    require_broker,
)
from calstream.daemon.operations.logs import escape_controls
from calstream.daemon.operations.status_render import LINE_CHARS
from calstream.steps.plans import PlanError, load_plan
from calstream.topics import contract
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import bounded

group("plan", "expected exposures (a jwst pool or a manifest) for stage 3")


def plan_message(path: Path, by: str | None) -> contract.Message:
    plan = load_plan(path)
    body = plan.to_json()
    return contract.build("plan", contract.event_id("plan", plan.plan_id),
                          plan_id=plan.plan_id, source=plan.source, by=by,
                          programs=list(plan.programs), exposures=body["exposures"])


async def publish_plan(cfg, message: contract.Message) -> None:
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    await send_messages(cfg, topics.name("plans"), [(message["programs"][0], message)])


async def loaded_plans(cfg) -> list[dict]:
    """Each plan on the plans topic once (its first record: loading a plan
    again sends the same plan). The topic is folded as it is read, never
    held whole: each plan is kept once however often it was loaded."""
    plans: dict[str, dict] = {}

    def fold(batch) -> None:
        for record in batch:
            try:
                message = contract.decode(record.value, expected="plan")
            except contract.InvalidMessage:
                continue
            plans.setdefault(message["plan_id"], message.body)
    await kafka.fold_to_end(cfg, Topics(cfg.topic_prefix).name("plans"), fold)
    return list(plans.values())


def _load_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="jwst association pool (pipe-delimited) or JSON manifest")
    p.add_argument("--dry-run", action="store_true", help="parse and summarise only")


@command("plan load", "publish a pool file or manifest to the planner", flags=(*DAEMON_FLAGS, "--by"),
         arguments=_load_arguments)
def cmd_load(args: argparse.Namespace) -> int:
    cfg = deployment_config(args)
    if not args.dry_run:
        require_broker(cfg, "plan")
    try:
        message = plan_message(Path(args.file), operator(args))
    except PlanError as exc:  # on stderr: stdout is the plan's summary
        print(f"calstream: {exc}", file=sys.stderr)
        return 1
    candidates = sorted({c for e in message["exposures"] for c in e["candidates"]})
    print(f"plan {message['plan_id'][:12]} from {args.file}: {len(message['exposures'])} "
          f"expected exposure file(s) of program(s) {', '.join(message['programs'])}; "
          f"candidates {', '.join(candidates) or 'none'}")
    if args.dry_run:
        return 0
    anyio.run(publish_plan, cfg, message)
    print("published on the plans topic; the planner applies it at once (loading it again "
          "changes nothing)")
    return 0


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


@command("plan list", "plans on the plans topic", flags=DAEMON_FLAGS, arguments=_list_arguments)
def cmd_list(args: argparse.Namespace) -> int:
    cfg = broker_config(args, "plan")
    plans = anyio.run(loaded_plans, cfg)
    if args.json:
        print(json.dumps(plans, indent=1))
        return 0
    if not plans:
        print("no plans loaded")
        return 0
    for p in plans:
        print(plan_row(p))
    return 0


def plan_row(p: dict) -> str:
    """One plan, one line, escaped as holds and dead-letter rows are: the
    plans topic is anyone's to write, and its ``source`` and ``by`` are free
    text (a forged one cleared the screen and wrote lines of its own)."""
    # Bounded as a status line: a megabyte of source was printed whole.
    return escape_controls(bounded(f"{p['plan_id'][:12]}  {p['emitted_at']}  {p.get('source')}"
                                   f"  by {p.get('by')}: {len(p['exposures'])} exposure(s), "
                                   f"program(s) {', '.join(p['programs'])}", LINE_CHARS))
