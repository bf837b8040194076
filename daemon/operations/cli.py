"""The ``calstream`` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import anyio

from calstream.daemon.operations import deployment, logs
from calstream.daemon.operations.config import ROLES, ConfigError, load

log = logging.getLogger("calstream.cli")


def _daemon_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=os.environ.get("CALSTREAM_CONFIG"),
                   help="TOML file (a [calstream] table or top-level keys)")
    p.add_argument("--work-dir", type=Path, help="state, scratch and the embedded broker")
    p.add_argument("--inbox", type=Path, help="where uncal files land (default WORK/inbox)")
    p.add_argument("--products", type=Path, help="product store (default WORK/products)")
    p.add_argument("--quarantine", type=Path, help="bad files go here (default WORK/quarantine)")
    p.add_argument("--kafka-bootstrap", help="HOST:PORT[,...]; omit to run the embedded broker")
    p.add_argument("--topic-prefix", help="prefix of every topic name (default 'calstream.')")
    p.add_argument("--workers", type=int, help="calibration worker processes")
    p.add_argument("--metrics-address", help="HOST:PORT of /metrics, /healthz, /readyz")
    p.add_argument("--polling", action="store_const", const=True,
                   help="poll the inbox (network filesystems deliver no events)")
    p.add_argument("--json-logs", action="store_const", const=True, help="JSON log lines")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ...")


def _flags(args: argparse.Namespace, *names: str) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


_DAEMON_FLAGS = ("work_dir", "inbox", "products", "quarantine", "kafka_bootstrap", "topic_prefix",
                 "workers", "metrics_address", "polling", "json_logs", "log_level")


def _config(args: argparse.Namespace, **extra):
    flags = _flags(args, *_DAEMON_FLAGS)
    if getattr(args, "role", None):
        flags["roles"] = args.role
    flags.update(extra)
    cfg = load(args.config, flags=flags)
    # Every command but the daemon itself finds a running deployment by its work dir.
    return cfg if args.command == "run" else deployment.discover(cfg)


async def _until_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            scope.cancel()
            return


def cmd_run(args: argparse.Namespace) -> int:
    from calstream.daemon.runtime import Daemon

    cfg = _config(args)
    logs.setup(cfg.log_level, cfg.json_logs)
    daemon = Daemon(cfg)
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


def cmd_demo(args: argparse.Namespace) -> int:
    from calstream.daemon.operations.demo import run_demo

    logs.setup(args.log_level or "INFO", False)
    return run_demo(work_dir=args.work_dir, workers=args.workers, timeout=args.timeout,
                    metrics_address=args.metrics_address, seed=args.seed)


def cmd_simulate(args: argparse.Namespace) -> int:
    from calstream.steps.synthetic.kit import build_kit, env_lines
    from calstream.steps.synthetic.program import ProgramSpec

    logs.setup(args.log_level or "INFO", False)
    spec_args = {"program": args.program, "subarray": args.subarray}
    if args.dithers:
        spec_args["dithers"] = args.dithers
    if args.detectors:
        spec_args["detectors"] = tuple(args.detectors)
    if args.planned:
        spec_args["planned"] = tuple(args.planned)
    spec = ProgramSpec(**{k: v for k, v in spec_args.items() if v is not None})
    kit = build_kit(args.out_dir, spec, seed=args.seed, references=not args.no_references,
                    modes=tuple(args.modes))
    for f in kit.uncal_files:
        print(f)
    print(f"\n# plan: {kit.pool_path} (jwst association pool), {kit.manifest_path}",
          file=sys.stderr)
    for eid in kit.missing:
        print(f"# missing (planned, never written): {eid}", file=sys.stderr)
    for f in kit.late:
        print(f"# late (delivered last): {f.name}", file=sys.stderr)
    for visit, detectors in kit.unsimulated_detectors().items():
        print(f"# warning: {visit}: the headers say {', '.join(detectors)} are read too, but "
              "no file is simulated for them: its stage-3 candidates close only after the "
              "quiet period, degraded (a point-source subarray such as SUB160P is read on "
              "one detector)", file=sys.stderr)
    if kit.crds_env:
        (Path(args.out_dir) / "crds.env").write_text(env_lines(kit.crds_env))
        print(f"\n# CRDS: an offline cache with context {kit.context}; for calstream run:",
              file=sys.stderr)
        print(env_lines(kit.crds_env), file=sys.stderr, end="")
    if args.inbox:
        from calstream.steps.synthetic.downlink import deliver

        deliver(kit.delivery_order(), args.inbox, interval=args.interval, pieces=args.pieces,
                piece_delay=args.piece_delay)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from calstream.daemon.doers import kafka
    from calstream.topics.catalog import Topics

    cfg = _config(args)
    logs.setup(cfg.log_level, cfg.json_logs)
    if not cfg.kafka_bootstrap:
        raise ConfigError("topics commands need a broker: --kafka-bootstrap HOST:PORT "
                          "(or CALSTREAM_KAFKA_BOOTSTRAP, or kafka_bootstrap in the config file)")
    topics = Topics(cfg.topic_prefix)
    if args.action == "create":
        created = anyio.run(kafka.create_topics, cfg, topics)
        print(f"created {len(created)} topic(s)" + (": " + ", ".join(created) if created else
                                                    " (all existed)"))
        return 0
    rows = anyio.run(kafka.describe_catalog, cfg, topics)
    print(f"{'topic':32} {'exists':6} {'parts':>5}  {'key':14} {'message':16} policy")
    for r in rows:
        print(f"{r['topic']:32} {'yes' if r['exists'] else 'NO':6} "
              f"{r['partitions'] if r['partitions'] is not None else '-':>5}  "
              f"{r['key']:14} {r['message']:16} {r['policy']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="the daemon: every role in one process, or one with --role")
    _daemon_flags(p)
    p.add_argument("--role", action="append", choices=ROLES,
                   help="run only this role (repeatable); default: all")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="embedded broker + synthetic program, end to end")
    p.add_argument("--work-dir", type=Path, default=Path("demo-work"),
                   help="the demo's own directory; cleared at start")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for products")
    p.add_argument("--metrics-address", default="127.0.0.1:0")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="write a synthetic program, reference files and CRDS cache")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--program")
    # SUB160P: read on the one simulated detector, so the visit's headers can
    # say when it is complete (SUB160 is read on the whole module).
    p.add_argument("--subarray", default="SUB160P")
    p.add_argument("--dithers", type=int)
    p.add_argument("--detectors", nargs="+")
    p.add_argument("--planned", type=int, nargs="+", help="exposure numbers with ENGQLPTG=PLANNED")
    p.add_argument("--no-references", action="store_true", help="only the uncal files")
    # steps.synthetic.kit.ALL_MODES, spelled out: the parser must not import numpy.
    p.add_argument("--modes", nargs="+", default=["imaging"],
                   choices=("imaging", "timeseries", "lrs", "mosaic", "segmented", "missing",
                            "coron", "ami"),
                   help="what the program observes (default: imaging). mosaic: observation "
                        "001's second visit, one exposure delivered late; segmented: a time "
                        "series in 3 segments; missing: a 4-dither visit whose exposure 3 "
                        "is never written; coron: NIRCam coronagraphy, science and PSF "
                        "reference; ami: a NIRISS AMI target and its calibrator")
    p.add_argument("--inbox", type=Path, help="then deliver the files here, as a downlink would")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between files")
    p.add_argument("--pieces", type=int, default=1, help="write each file in N pieces")
    p.add_argument("--piece-delay", type=float, default=0.0, help="seconds between pieces")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("topics", help="create or list the topic catalog on a broker")
    p.add_argument("action", choices=("create", "list"))
    _daemon_flags(p)
    p.set_defaults(func=cmd_topics)
    from calstream.daemon.operations.holds_cli import add_parser as add_holds
    from calstream.daemon.operations.plan_cli import add_parser as add_plan
    from calstream.daemon.operations.status import add_parser as add_status
    from calstream.daemon.operations.subscribe import add_parser as add_subscribe

    add_status(sub)
    add_holds(sub, _daemon_flags, _config)
    add_plan(sub, _daemon_flags, _config)
    add_subscribe(sub)
    from calstream.daemon.operations.promote import add_parser as add_promote
    from calstream.daemon.operations.replay import add_parser as add_replay

    add_replay(sub, _daemon_flags, _config)
    add_promote(sub, _daemon_flags, _config)
    from calstream.daemon.operations.config_cli import add_parser as add_config

    add_config(sub, _daemon_flags, _config)
    from calstream.daemon.operations.console import add_parser as add_console

    add_console(sub, _daemon_flags, _config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"calstream: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
