"""``calstream status``: a running deployment at a glance (collected by
``status_collection.py``, written by ``status_render.py``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.parse

import anyio

from calstream.daemon.operations import deployment, logs
from calstream.daemon.operations.cli.registry import (
    BROKER_FLAGS,
    command,
    count_argument,
    deployment_config,
    seconds_argument,
)
from calstream.daemon.operations.status_collection import (
    collect,
    default_metrics_url,
    endpoint_base,
)
from calstream.daemon.operations.status_render import printable


def _metrics_url_argument(text: str) -> str:
    """A daemon's endpoint: HOST:PORT or an http(s) URL. One no URL can be
    (``http://[::1``, a typo) was urllib's ValueError traceback after the
    broker was read; a ``file:`` URL read local files."""
    try:
        url = urllib.parse.urlsplit(endpoint_base(text))
        sound = url.scheme in ("http", "https") and bool(url.hostname) and url.port is not None
    except ValueError:  # a bracket unclosed, a port that is no number or over 65535
        sound = False
    if not sound:
        raise argparse.ArgumentTypeError(f"{text!r} is not a daemon's metrics endpoint "
                                         "(HOST:PORT or http://HOST:PORT)")
    return text


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-url", action="append", type=_metrics_url_argument,
                   help="a daemon's metrics endpoint, HOST:PORT or URL; repeat for each daemon "
                        "(default: metrics_address of the config)")
    p.add_argument("--dead-letters", type=count_argument(0), default=10, metavar="N",
                   help="show the last N dead letters (default 10)")
    p.add_argument("--products", type=count_argument(0), default=10, metavar="N",
                   help="show the last N product events (default 10)")
    p.add_argument("--timeout", type=seconds_argument, default=15.0, help="seconds to wait for the broker")
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("status", "summary of a running deployment, from the broker and the metrics",
         description="What a running deployment is doing: readiness and in-flight work per "
                     "daemon, consumer lag per topic, recent dead letters and products. "
                     "Exit status 1 when a daemon is unreachable or not ready, the "
                     "broker cannot be read, or work is parked on an infrastructure fault.",
         flags=(*BROKER_FLAGS, "--work-dir", "--group-prefix", "--log-level"),
         flag_overrides={"--log-level": dict(default="WARNING"), "--work-dir": dict(
             help="a deployment's work dir: its broker and endpoint are read from "
                  "WORK/deployment.json")},
         arguments=_arguments)
def cmd_status(args: argparse.Namespace) -> int:
    cfg = deployment_config(args)
    logs.setup(args.log_level, False)
    if args.work_dir is not None and not cfg.kafka_bootstrap and not args.metrics_url \
            and deployment.read(cfg.work_dir) is None:
        # A work dir no daemon runs with (a typo, a stopped one): the default
        # endpoint answered for whatever daemon held it, and the summary
        # said nothing of the mix-up (exit 0, "broker (none)").
        print(f"calstream: no daemon is recorded in {deployment.record_path(cfg.work_dir)}: "
              "none runs with this work dir (a clean stop removes the record), or it cannot "
              "write there (a read-only or full work dir); give --kafka-bootstrap and "
              "--metrics-url to read a deployment another way", file=sys.stderr)
        return 1
    if logging.getLogger().level > logging.DEBUG:
        # A broker that cannot be reached is reported in the summary itself.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    urls = args.metrics_url or [u for u in [default_metrics_url(cfg)] if u]
    st = anyio.run(lambda: collect(cfg, urls, dead_letters=args.dead_letters,
                                   products=args.products, timeout=args.timeout))
    if args.json:
        json.dump(st.as_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(printable(st))
    return 0 if st.healthy else 1
