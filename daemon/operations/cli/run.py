"""``calstream run``: the daemon, every role in one process or one with ``--role``."""

from __future__ import annotations

import argparse
import logging
import signal

import anyio

from calstream.daemon.doers import work_dir_lock
from calstream.daemon.operations import logs
from calstream.daemon.operations.cli.registry import DAEMON_FLAGS, command, deployment_config
from calstream.daemon.operations.config import ROLES

log = logging.getLogger("calstream.cli")


async def _until_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            scope.cancel()
            return


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", action="append", choices=ROLES,
                   help="run only this role (repeatable); default: all")


@command("run", "the daemon: every role in one process, or one with --role",
         flags=DAEMON_FLAGS, arguments=_arguments)
def cmd_run(args: argparse.Namespace) -> int:
    cfg = deployment_config(args)
    logs.setup(cfg.log_level, cfg.json_logs)
    # Before the embedded broker and anything else touches the work directory
    # (or, where it cannot be made yet, by the start's wait for it: Daemon.run).
    with work_dir_lock.holding(cfg.work_dir) as lock:
        return _run(cfg, lock)


def _run(cfg, lock: work_dir_lock.WorkDirLock) -> int:
    from calstream.daemon.runtime import Daemon

    daemon = Daemon(cfg, lock)
    bootstrap = daemon.start_broker()
    print(f"calstream: broker {bootstrap}{' (embedded tansu)' if daemon.broker else ''}",
          flush=True)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_until_signal, tg.cancel_scope)
            await tg.start(daemon.run)
            print(f"calstream: metrics http://{daemon.ops.address}/metrics  "
                  f"console http://{daemon.ops.address}/console/  "
                  f"roles {','.join(cfg.roles)}  CRDS context {daemon.crds_context}", flush=True)

    try:
        anyio.run(main)
    finally:
        daemon.stop_broker()
    return 0
