"""``calstream console``: the read-only web console of a deployment, on its own
(the daemon also serves it at /console)."""

from __future__ import annotations

import argparse
import sys

from calstream.daemon.operations.cli.registry import DAEMON_FLAGS, command, deployment_config
from calstream.daemon.operations.config import ConfigError, host_port
from calstream.daemon.operations.console import Console, serve
from calstream.daemon.operations.status_collection import default_metrics_url


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default="127.0.0.1:9320",
                   help="HOST:PORT to serve on (default loopback 127.0.0.1:9320)")


@command("console", "the read-only web console of a deployment (also served by the daemon at "
         "/console)", flags=DAEMON_FLAGS, arguments=_arguments)
def cmd_console(args: argparse.Namespace) -> int:
    cfg = deployment_config(args)
    url = default_metrics_url(cfg)
    console = Console(cfg, lambda: [url] if url else [])
    try:
        server = serve(console, *host_port(args.address))
    except OSError as exc:  # a port another console or daemon has, an address not this host's
        # As `calstream run` says of its metrics_address: one line, not bind's traceback.
        raise ConfigError(f"--address {args.address}: the console cannot listen there "
                          f"({exc.strerror or exc}); give another HOST:PORT") from None
    host, port = server.server_address[:2]
    print(f"calstream: console http://{host}:{port}/console/ (products {cfg.products}, "
          f"broker {cfg.kafka_bootstrap or 'none'})", flush=True)
    missing = console.data.store_missing()
    if missing:  # also at the top of every page; said here for whoever started it
        print(f"calstream: warning: {missing}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
