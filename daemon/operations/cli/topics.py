"""``calstream topics create|list|acls``: the topic catalog on any broker,
and the ACLs a broker needs to let each role write only its own topics."""

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
    p.add_argument("action", choices=("create", "list", "acls"),
                   help="acls: print the kafka-acls.sh commands granting each role, the "
                        "operators and the subscribers what they need (no broker is asked)")
    p.add_argument("--principal", default="User:calstream-{role}", metavar="PATTERN",
                   help="acls: each principal's name, {role} standing for watcher, detector1, "
                        "planner, stage2, stage3, operator or subscriber "
                        "(default: %(default)s)")
    p.add_argument("--no-create", dest="create", action="store_false",
                   help="acls: grant no principal Create (an admin creates the topics once with "
                        "`topics create`; run the daemons with create_topics = false)")


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
    topics = Topics(cfg.topic_prefix)
    if args.action == "acls":
        return _print_acls(cfg, topics, args.principal, create=args.create)
    require_broker(cfg, "topics")
    if args.action == "create":
        # Refused (TopicsMissing): exit 1 naming each topic and why (cli/main.py).
        created = anyio.run(kafka.create_topics, cfg, topics)
        print(f"created {len(created)} topic(s)" + (": " + ", ".join(created) if created else
                                                    " (all existed)"))
        return 0
    _print_catalog(anyio.run(kafka.describe_catalog, cfg, topics))
    return 0


def _print_acls(cfg, topics, principal: str, *, create: bool = True) -> int:
    from calstream.daemon.deciders import broker_access
    from calstream.daemon.operations.config import ConfigError

    if "{role}" not in principal or not principal.replace("{role}", ""):
        raise ConfigError(f"--principal {principal!r} must contain {{role}}, e.g. "
                          "User:calstream-{role}")
    print(f"# calstream's ACLs: topics {topics.prefix}*, consumer groups {cfg.group_prefix}*;")
    print("# $KAFKA: the bootstrap servers, $ADMIN_CONFIG: an admin client's properties.")
    print("# Give each role's daemons its own principal (security.sasl_username).")
    if not create:
        print("# No principal may create topics: an admin runs `calstream topics create` once;")
        print("# run the daemons with create_topics = false (they wait for missing topics).")
    known = [s.logical for s in topics.specs]
    for line in broker_access.acl_commands(topics.prefix, cfg.group_prefix, principal, known,
                                           create=create):
        print(line)
    return 0
