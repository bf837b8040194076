"""``calstream topics create|list``: the topic catalog on any broker."""

from __future__ import annotations

import argparse

import anyio

from calstream.daemon.operations import logs
from calstream.daemon.operations.cli.registry import (
    DAEMON_FLAGS,
    command,
    deployment_config,
    require_broker,
)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("create", "list"))


def _print_catalog(rows: list[dict]) -> None:
    print(f"{'topic':32} {'exists':6} {'parts':>5}  {'key':14} {'message':16} policy")
    for r in rows:
        print(f"{r['topic']:32} {'yes' if r['exists'] else 'NO':6} "
              f"{r['partitions'] if r['partitions'] is not None else '-':>5}  "
              f"{r['key']:14} {r['message']:16} {r['policy']}")


@command("topics", "create or list the topic catalog on a broker", flags=DAEMON_FLAGS,
         arguments=_arguments)
def cmd_topics(args: argparse.Namespace) -> int:
    from calstream.daemon.doers import kafka
    from calstream.topics.catalog import Topics

    cfg = deployment_config(args)
    logs.setup(cfg.log_level, cfg.json_logs)
    require_broker(cfg, "topics")
    topics = Topics(cfg.topic_prefix)
    if args.action == "create":
        created = anyio.run(kafka.create_topics, cfg, topics)
        print(f"created {len(created)} topic(s)" + (": " + ", ".join(created) if created else
                                                    " (all existed)"))
        return 0
    _print_catalog(anyio.run(kafka.describe_catalog, cfg, topics))
    return 0
