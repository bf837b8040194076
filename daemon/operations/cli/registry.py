"""The one registry of ``calstream`` commands, and the flags they share.

A command module registers each handler with ``@command(name, ...)``: its
name (``"holds list"`` is the ``list`` action of the ``holds`` group), its
help, the shared flags it takes (by name, from ``SHARED_FLAGS``) and a function
adding its own arguments. ``main.build_parser`` turns the registry into the
argparse tree; every handler takes the parsed arguments and returns the exit
status.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calstream.daemon.operations import deployment
from calstream.daemon.operations.config import Config, ConfigError, load
from calstream.topics import contract

Handler = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Flag:
    """One option shared by several commands, written once."""

    option: str
    settings: dict[str, Any]
    config: bool = True  # a setting of config.Config: deployment_config() passes it on


# The deployment's settings (config.Config fields) that commands take as flags.
SHARED_FLAGS: dict[str, Flag] = {f.option: f for f in (
    Flag("--config", dict(type=Path, default=os.environ.get("CALSTREAM_CONFIG"),
                          help="the deployment's TOML file (a [calstream] table or top-level "
                               "keys: broker, prefixes, TLS/SASL)"), config=False),
    Flag("--work-dir", dict(type=Path, help="state, scratch and the embedded broker")),
    Flag("--inbox", dict(type=Path, help="where uncal files land (default WORK/inbox)")),
    Flag("--products", dict(type=Path, help="product store (default WORK/products)")),
    Flag("--quarantine", dict(type=Path, help="bad files go here (default WORK/quarantine)")),
    Flag("--kafka-bootstrap", dict(help="HOST:PORT[,...] of the broker (`run` without it "
                                        "starts the embedded one)")),
    Flag("--topic-prefix", dict(help="prefix of every topic name (default 'calstream.')")),
    Flag("--group-prefix", dict(help="prefix of the consumer groups (default 'calstream')")),
    Flag("--workers", dict(type=int, help="calibration worker processes")),
    Flag("--metrics-address", dict(help="HOST:PORT of /metrics, /healthz, /readyz")),
    Flag("--polling", dict(action="store_const", const=True,
                           help="poll the inbox (network filesystems deliver no events)")),
    Flag("--json-logs", dict(action="store_const", const=True, help="JSON log lines")),
    Flag("--log-level", dict(help="DEBUG, INFO, WARNING, ...")),
    # Recorded with what the command asks for (a release, a plan, a replay, a promotion).
    Flag("--by", dict(help="who asks (recorded; default: the user name)"), config=False),
)}

# What a command that talks to a deployment's broker takes.
# A command that would leave a gap the operator did not accept by name (a
# replay past retention, a promotion of less than live): nothing was done.
EXIT_GAP = 3

BROKER_FLAGS = ("--config", "--kafka-bootstrap", "--topic-prefix")
# What the daemon and the commands acting on its state take: every setting.
DAEMON_FLAGS = ("--config", "--work-dir", "--inbox", "--products", "--quarantine",
                "--kafka-bootstrap", "--topic-prefix", "--workers", "--metrics-address",
                "--polling", "--json-logs", "--log-level")


def reason_argument(text: str) -> str:
    """A ``--reason`` a person can read later: at least the pointing update's
    minimum of visible characters. ``holds release --reason ""`` (or "ok")
    ended in the schema's traceback after the holds topic was read, and a
    blank one was recorded as the why of a release or a redrive."""
    least = contract.schema("pointing_update")["properties"]["reason"]["minLength"]
    if len(text.strip()) < least:
        raise argparse.ArgumentTypeError(
            f"{text!r} says nothing: give the reason in at least {least} characters")
    return text


def count_argument(least: int) -> Callable[[str], int]:
    """A whole number of at least ``least``: a negative ``--dead-letters``
    showed every record but the first few, and ``--max -1`` stopped after one."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least {least}")
        return value
    return parse


def seconds_argument(text: str) -> float:
    """A time in seconds above zero (``--timeout -1`` gave up at once; a
    ``nan`` compares false with everything: ``--until-idle nan`` never stopped)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def pause_argument(text: str) -> float:
    """A pause in seconds, 0 or more (``simulate --interval -1`` wrote the
    program, then ended in time.sleep's traceback before delivering it)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds of 0 or more")
    return value


def dest(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def add_shared_flags(parser: argparse.ArgumentParser, options: Sequence[str],
                     overrides: dict[str, dict[str, Any]] | None = None) -> None:
    """Add the named shared flags; ``overrides`` changes a flag's settings for
    one command (the demo's own work directory, say)."""
    for option in options:
        settings = {**SHARED_FLAGS[option].settings, **(overrides or {}).get(option, {})}
        parser.add_argument(option, **settings)


def deployment_config(args: argparse.Namespace) -> Config:
    """The configuration: defaults < TOML file < environment < the flags given."""
    # Only the shared flags this command took: another command's own option may
    # have the same name (status's --products is a count, not a directory).
    given = [SHARED_FLAGS[o] for o in args.shared_flags]
    flags = {dest(f.option): getattr(args, dest(f.option)) for f in given
             if f.config and getattr(args, dest(f.option)) is not None}
    if getattr(args, "role", None):
        flags["roles"] = args.role
    cfg = load(args.config, flags=flags)
    # Every command but the daemon itself finds a running deployment by its work dir.
    return cfg if args.command == "run" else deployment.discover(cfg)


def operator(args: argparse.Namespace) -> str:
    """Who asked: --by, or the user running the command."""
    return args.by or getpass.getuser()


def broker_config(args: argparse.Namespace, command: str) -> Config:
    """The configuration of a command that cannot work without the broker."""
    cfg = deployment_config(args)
    require_broker(cfg, command)
    return cfg


def require_broker(cfg: Config, command: str) -> None:
    if not cfg.kafka_bootstrap:
        # No broker was given and none recorded (a stale record stopped the
        # command already): say where one was looked for, or `--work-dir W`
        # of a stopped daemon (or a typo) read as if the flag were ignored.
        raise ConfigError(f"{command} commands need a broker, and no daemon is recorded in "
                          f"{deployment.record_path(cfg.work_dir)} (none runs with this work "
                          "dir: a clean stop removes the record): start it, or give "
                          "--kafka-bootstrap HOST:PORT (or CALSTREAM_KAFKA_BOOTSTRAP, or "
                          "kafka_bootstrap in the config file)")


@dataclass(frozen=True)
class Command:
    name: str  # "status", or "holds list" for an action of a group
    help: str
    handler: Handler
    flags: tuple[str, ...] = ()  # shared flags, by option
    flag_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    arguments: Arguments | None = None  # the command's own arguments
    description: str | None = None
    raw_description: bool = False  # keep the description's line breaks


COMMANDS: dict[str, Command] = {}  # in registration order: the order of --help
GROUPS: dict[str, str] = {}  # group name -> its help ("holds": ...)


def command(name: str, help: str, *, flags: Sequence[str] = (),
            flag_overrides: dict[str, dict[str, Any]] | None = None,
            arguments: Arguments | None = None, description: str | None = None,
            raw_description: bool = False) -> Callable[[Handler], Handler]:
    """Register the decorated handler as ``calstream NAME``."""
    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"calstream {name} is registered twice")
        COMMANDS[name] = Command(name, help, handler, tuple(flags), dict(flag_overrides or {}),
                                 arguments, description, raw_description)
        return handler
    return register


def group(name: str, help: str) -> None:
    """Declare a command group (``calstream holds ...``); its actions are
    registered as ``"holds list"`` and so on."""
    GROUPS[name] = help

