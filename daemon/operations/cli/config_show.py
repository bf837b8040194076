"""``calstream config show``: the effective configuration, and where each value came from."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from calstream.daemon.operations.cli.registry import DAEMON_FLAGS, command, deployment_config
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.config_parsers import PARSERS
from calstream.daemon.operations.config_values import mask

# Paths that default to a place inside work_dir.
_DERIVED = {"inbox": "work_dir/inbox", "products": "work_dir/products",
            "quarantine": "work_dir/quarantine", "allowed_roots": "[inbox]",
            "stall_seconds": "task_timeout + 900", "stage3_stall_seconds": "stage3_task_timeout + 900"}


def _value(cfg: Config, name: str) -> Any:
    target, attr = (cfg.security, name[9:]) if name.startswith("security.") else (cfg, name)
    return getattr(target, attr)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def effective_settings(cfg: Config) -> list[dict[str, Any]]:
    """One row per setting: name, value (secrets masked), source."""
    rows = []
    for name in PARSERS:
        source = cfg.sources.get(name)
        if source is None:
            source = f"default ({_DERIVED[name]})" if name in _DERIVED else "default"
        rows.append({"setting": name, "value": mask(name, _plain(_value(cfg, name))),
                     "source": source})
    return rows


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list | bool):
        return json.dumps(value)
    return str(value)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("show",),
                   help="show: every setting, its value (secrets masked) and its source")
    p.add_argument("--json", action="store_true")


@command("config", "the effective configuration and where each value came from",
         flags=DAEMON_FLAGS, arguments=_arguments)
def cmd_show(args: argparse.Namespace) -> int:
    cfg = deployment_config(args)
    rows = effective_settings(cfg)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["setting"]) for r in rows)
    for r in rows:
        print(f"{r['setting']:{width}}  {_shown(r['value']):40}  {r['source']}")
    return 0


assert not set(_DERIVED) - {f.name for f in dataclasses.fields(Config)}
