"""The planner's restore on the embedded broker: the reads of its topics.

A planner's start reads its work-order topics, then ``holds``, then
``plans`` (doers/planner_restore.py). Each reader costs its client's start,
metadata, assignment and, on an empty topic, one fetch wait of the broker.
This times ``planner.restore()`` whole (no snapshot, an empty work
directory: only the topics' reads and a little bookkeeping), wall and the
process's CPU beside it (the broker, a child process, is not in it), on
new empty topics and on topics that hold ``--records`` records a work-order
topic (undecodable: read and skipped, as a foreign record is).

Each round is its own process with a fresh broker: one restore first (not
counted: imports, the broker's first answers), then ``--starts`` restores,
each with a new Planner, as a restart would. With ``--before PYTHONPATH``
the rounds take turns between this code and the ``calstream`` package
found there (A B B A ...).

    .venv/bin/python bench/restore_reads.py --before /tmp/before-pkg --rounds 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from measuring import on_embedded_broker, round_in_process  # noqa: E402


def one_round(starts: int, records: int) -> dict:
    """In this process: a broker, its topics, ``starts`` restores timed."""
    import calstream
    from calstream.daemon.doers import kafka
    from calstream.daemon.doers.planner_loop import Planner
    from calstream.daemon.operations.config import load
    from calstream.daemon.operations.metrics import Metrics
    from calstream.topics.catalog import Topics

    async def main(bootstrap: str, tmp: Path) -> dict:
        cfg = load(None, env={}, flags={"work_dir": tmp / "work", "kafka_bootstrap": bootstrap,
                                        "topic_prefix": "bench.", "roles": ["planner"]})
        topics = Topics(cfg.topic_prefix)
        await kafka.create_topics(cfg, topics)
        producer = kafka.producer(cfg)
        await producer.start()
        try:
            out = {"code": str(Path(calstream.__file__).parent)}
            for kind in ("new", "with_records"):
                if kind == "with_records":
                    probe = Planner(cfg, publisher=None, metrics=Metrics(), topics=topics)
                    for name in probe._work_topics():
                        for n in range(records):
                            await producer.send(topics.name(name), b"not a work order %d" % n)
                    await producer.flush()
                walls, cpus = [], []
                for n in range(starts + 1):
                    metrics = Metrics()
                    planner = Planner(cfg, publisher=kafka.Publisher(producer, topics, metrics),
                                      metrics=metrics, topics=topics)
                    wall, cpu = time.perf_counter(), time.process_time()
                    await planner.restore()
                    if n:  # the first: warm-up
                        walls.append(time.perf_counter() - wall)
                        cpus.append(time.process_time() - cpu)
                out[kind] = {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}
            return out
        finally:
            await producer.stop()

    return on_embedded_broker("calstream-restore-reads-", main)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=5, help="restores timed a round")
    ap.add_argument("--records", type=int, default=200, help="records a work-order topic")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--before", type=Path, metavar="PYTHONPATH")
    ap.add_argument("--round", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.round:
        print(json.dumps(one_round(args.starts, args.records)))
        return 0
    setups = {"this code": None, **({"before": args.before} if args.before else {})}
    runs: dict[str, list[dict]] = {name: [] for name in setups}
    for r in range(args.rounds):
        for name in (list(setups) if r % 2 == 0 else list(reversed(setups))):
            x = round_in_process(HERE, ["--round", "--starts", str(args.starts),
                                        "--records", str(args.records)], setups[name])
            runs[name].append(x)
            print(f"round {r + 1}: {name:9s} new topics {x['new']['wall']:.3f} s "
                  f"(CPU {x['new']['cpu']:.3f}), with records {x['with_records']['wall']:.3f} s "
                  f"(CPU {x['with_records']['cpu']:.3f})  [{x['code']}]", flush=True)
    table = {name: {kind: {what: [round(statistics.median(x[kind][what] for x in rs), 3),
                                  round(min(x[kind][what] for x in rs), 3),
                                  round(max(x[kind][what] for x in rs), 3)]
                           for what in ("wall", "cpu")} for kind in ("new", "with_records")}
             for name, rs in runs.items()}
    print(json.dumps(table, indent=1))  # [median, min, max] seconds a restore
    return 0


if __name__ == "__main__":
    sys.exit(main())
