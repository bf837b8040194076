"""``calstream demo``: the embedded end-to-end demo (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from calstream.daemon.operations import logs
from calstream.daemon.operations.cli.registry import command, count_argument, seconds_argument


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=seconds_argument, default=600.0,
                   help="seconds to wait for products")
    p.add_argument("--seed", type=count_argument(0), default=1)


@command("demo", "embedded broker + synthetic program, end to end",
         flags=("--work-dir", "--workers", "--metrics-address", "--log-level"),
         flag_overrides={"--work-dir": dict(default=Path("demo-work"),
                                            help="the demo's own directory; cleared at start"),
                         "--workers": dict(default=2),
                         "--metrics-address": dict(default="127.0.0.1:0"),
                         "--log-level": dict(default="INFO")},
         arguments=_arguments)
def cmd_demo(args: argparse.Namespace) -> int:
    from calstream.daemon.operations.demo import run_demo

    logs.setup(args.log_level or "INFO", False)
    return run_demo(work_dir=args.work_dir, workers=args.workers, timeout=args.timeout,
                    metrics_address=args.metrics_address, seed=args.seed)
