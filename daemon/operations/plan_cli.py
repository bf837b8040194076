"""``calstream plan load`` and ``calstream plan list``: tell the planner what will come.

A plan (a jwst association pool or a manifest, ``steps/plans.py``) is
published on the plans topic; the planner reads it (now, and again after
every restart) and closes the stage-3 candidates it covers the moment their
last planned member is calibrated, instead of waiting for a quiet period.
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path

import anyio

from calstream.daemon.doers import kafka
from calstream.daemon.operations.config import ConfigError
from calstream.steps.plans import PlanError, load_plan
from calstream.topics import contract
from calstream.topics.catalog import Topics


def plan_message(path: Path, by: str | None) -> contract.Message:
    plan = load_plan(path)
    body = plan.to_json()
    return contract.build("plan", contract.event_id("plan", plan.plan_id),
                          plan_id=plan.plan_id, source=plan.source, by=by,
                          programs=list(plan.programs), exposures=body["exposures"])


async def publish_plan(cfg, message: contract.Message) -> None:
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        await producer.send_and_wait(topics.name("plans"), contract.encode(message),
                                     key=message["programs"][0].encode())
    finally:
        await producer.stop()


async def loaded_plans(cfg) -> list[dict]:
    plans: dict[str, dict] = {}
    for record in await kafka.read_to_end(cfg, Topics(cfg.topic_prefix).name("plans")):
        try:
            message = contract.decode(record.value, expected="plan")
        except contract.InvalidMessage:
            continue
        plans.setdefault(message["plan_id"], message.body)
    return list(plans.values())


def cmd_load(cfg, args: argparse.Namespace) -> int:
    try:
        message = plan_message(Path(args.file), args.by or getpass.getuser())
    except PlanError as exc:
        print(f"calstream: {exc}")
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


def cmd_list(cfg, args: argparse.Namespace) -> int:
    plans = anyio.run(loaded_plans, cfg)
    if args.json:
        print(json.dumps(plans, indent=1))
        return 0
    if not plans:
        print("no plans loaded")
        return 0
    for p in plans:
        print(f"{p['plan_id'][:12]}  {p['emitted_at']}  {p.get('source')}  by {p.get('by')}: "
              f"{len(p['exposures'])} exposure(s), program(s) {', '.join(p['programs'])}")
    return 0


def add_parser(sub, daemon_flags, load_config) -> None:
    p = sub.add_parser("plan", help="expected exposures (a jwst pool or a manifest) for stage 3")
    actions = p.add_subparsers(dest="action", required=True)
    load = actions.add_parser("load", help="publish a pool file or manifest to the planner")
    daemon_flags(load)
    load.add_argument("file", help="jwst association pool (pipe-delimited) or JSON manifest")
    load.add_argument("--by", help="who (default: the user name)")
    load.add_argument("--dry-run", action="store_true", help="parse and summarise only")
    lst = actions.add_parser("list", help="plans on the plans topic")
    daemon_flags(lst)
    lst.add_argument("--json", action="store_true")

    def run(args: argparse.Namespace) -> int:
        cfg = load_config(args)
        if not cfg.kafka_bootstrap and not getattr(args, "dry_run", False):
            raise ConfigError("plan commands need the deployment's broker: --kafka-bootstrap")
        return (cmd_load if args.action == "load" else cmd_list)(cfg, args)

    p.set_defaults(func=run)
