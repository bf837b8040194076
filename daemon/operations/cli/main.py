"""``calstream``: the parser built from the one registry, and the entry point."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from calstream.daemon.deciders.replay_selection import BadSelection
from calstream.daemon.doers import kafka
from calstream.daemon.doers.message_sender import MessageRefused
from calstream.daemon.doers.product_store import BadNamespace
from calstream.daemon.operations.cli.registry import COMMANDS, GROUPS, add_shared_flags
from calstream.daemon.operations.config import ConfigError

# Importing a command module registers its commands; this order is --help's.
COMMAND_MODULES = ("run", "demo", "simulate", "topics", "status", "holds", "deadletters",
                   "plans", "subscribe", "replay", "promote", "config_show", "console")
for _module in COMMAND_MODULES:
    importlib.import_module(f"calstream.daemon.operations.cli.{_module}")



def in_help_order() -> list:
    """The registry's commands in COMMAND_MODULES' order: a module imported
    earlier elsewhere (a test, the console) must not reorder --help."""
    def place(cmd) -> int:
        return COMMAND_MODULES.index(cmd.handler.__module__.rsplit(".", 1)[-1])
    return sorted(COMMANDS.values(), key=place)  # stable: a module's own order kept


# Mistakes in what the operator asked for: reported in one line, exit status 2.
USER_ERRORS = (ConfigError, BadSelection, BadNamespace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calstream", description="The ``calstream`` command.")
    commands = parser.add_subparsers(dest="command", required=True)
    actions: dict[str, argparse._SubParsersAction] = {}
    for cmd in in_help_order():
        name = cmd.name
        group, _, action = name.partition(" ")
        if action:
            if group not in actions:
                parent = commands.add_parser(group, help=GROUPS[group])
                actions[group] = parent.add_subparsers(dest="action", required=True)
            sub, sub_name = actions[group], action
        else:
            sub, sub_name = commands, name
        options: dict = {"help": cmd.help}
        if cmd.description:
            options["description"] = cmd.description
        if cmd.raw_description:
            options["formatter_class"] = argparse.RawDescriptionHelpFormatter
        p = sub.add_parser(sub_name, **options)
        add_shared_flags(p, cmd.flags, cmd.flag_overrides)
        if cmd.arguments:
            cmd.arguments(p)
        p.set_defaults(func=cmd.handler, shared_flags=cmd.flags)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"calstream: configuration error: {exc}", file=sys.stderr)
        return 2
    except kafka.TopicsMissing as exc:  # refused to this principal (topics create, promote)
        print(f"calstream: {exc}", file=sys.stderr)
        return 1
    except MessageRefused as exc:  # a message the broker refuses for what it is
        print(f"calstream: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into a reader that stopped (`| head`): not a fault of
        # the command's; no traceback, and no second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        # The same faults raised inside a task group (the daemon's start, a
        # subscriber) arrive wrapped in an ExceptionGroup: still one line.
        if (reason := kafka.unreachable(exc)) is not None:
            print(f"calstream: the Kafka broker does not answer ({reason}): is it running, and "
                  "is its address right (--kafka-bootstrap, kafka_bootstrap in the "
                  "configuration, or the work dir's deployment.json)?", file=sys.stderr)
            return 1
        if (mistake := _user_error(exc)) is not None:
            print(f"calstream: configuration error: {mistake}", file=sys.stderr)
            return 2
        raise


def _user_error(exc: BaseException) -> BaseException | None:
    """The operator's mistake inside an exception group, if that is what it holds."""
    if isinstance(exc, USER_ERRORS):
        return exc
    inner = getattr(exc, "exceptions", ())
    return _user_error(inner[0]) if len(inner) == 1 else None


if __name__ == "__main__":
    sys.exit(main())
