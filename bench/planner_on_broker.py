"""The planner in a daemon on the embedded broker: events per second with Kafka.

bench_planner.py times the planner's record path without Kafka (issue 14's
yardstick). This one times what an operator gets: a planner-only daemon
started on a products topic that already holds N fresh detector1 events
(bench_planner's programs, each event one stage-2 order), reading them,
deciding and publishing its orders. The rate is taken between the first
and the last order counted (``calstream_work_orders_total``), so the
daemon's start is left out; the daemon process's CPU in that window beside
it (the broker, a child process, is not in it).

With ``--before PYTHONPATH`` the rounds take turns between this code and the
``calstream`` package found there (the code before a change), each round a
fresh broker and daemon in its own process.

    .venv/bin/python bench/planner_on_broker.py --programs 10 --size 1000 --rounds 3
    .venv/bin/python bench/planner_on_broker.py --before /tmp/before-pkg
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


def one_round(programs: int, size: int) -> dict:
    """In this process: a broker, the events, a planner-only daemon, timed."""
    import anyio
    import bench_planner

    from calstream.daemon.doers import kafka
    from calstream.daemon.operations.config import load
    from calstream.daemon.runtime import Daemon
    from calstream.topics.catalog import Topics

    async def main(bootstrap: str, tmp: Path) -> dict:
        cfg = load(None, env={}, flags={
            "work_dir": tmp / "work", "kafka_bootstrap": bootstrap, "topic_prefix": "bench.",
            "group_prefix": "bench", "roles": ["planner"], "metrics_address": "127.0.0.1:0",
            "fast_group_timing": True})
        for d in (cfg.products, cfg.inbox):
            d.mkdir(parents=True, exist_ok=True)
        # bench_planner's records, their paths moved under this daemon's roots.
        records = [r.replace(b'"/products/', f'"{cfg.products}/'.encode())
                   .replace(b'"/inbox/', f'"{cfg.inbox}/'.encode())
                   for p in range(programs) for r in bench_planner.program_records(p + 1, size)]
        await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
        producer = kafka.producer(cfg)
        await producer.start()
        topic = Topics(cfg.topic_prefix).name("products")
        for n, r in enumerate(records):
            await producer.send(topic, r, key=b"program-%d" % (n * programs // len(records)))
        await producer.flush()
        await producer.stop()
        orders = len(records) // 2  # one per detector1 event
        daemon = Daemon(cfg)
        counted = daemon.metrics.work_orders.labels(stage="stage2", degraded="false")
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            with anyio.fail_after(600):
                while counted._value.get() == 0:
                    await anyio.sleep(0.005)
                first, wall0, cpu0 = counted._value.get(), time.perf_counter(), time.process_time()
                while counted._value.get() < orders:
                    await anyio.sleep(0.005)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            tg.cancel_scope.cancel()
        events = 2 * (orders - int(first))
        return {"events": events, "wall": wall, "cpu": cpu, "rate": events / wall,
                "cpu_rate": events / cpu}

    return on_embedded_broker("calstream-planner-on-broker-", main)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", type=int, default=10)
    ap.add_argument("--size", type=int, default=1000, help="exposures per program")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", type=Path, metavar="PYTHONPATH")
    ap.add_argument("--round", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.round:
        print(json.dumps(one_round(args.programs, args.size)))
        return 0
    setups = {"this code": None, **({"before": args.before} if args.before else {})}
    runs: dict[str, list[dict]] = {name: [] for name in setups}
    for r in range(args.rounds):
        order = list(setups) if r % 2 == 0 else list(reversed(setups))
        for name in order:
            runs[name].append(round_in_process(HERE, [
                "--round", "--programs", str(args.programs), "--size", str(args.size)],
                setups[name]))
            x = runs[name][-1]
            print(f"round {r + 1}: {name:9s} {x['rate']:7.0f} events/s, "
                  f"{x['cpu_rate']:7.0f} per CPU-second ({x['events']} events)", flush=True)
    table = {name: {"events_per_s": round(statistics.median(x["rate"] for x in rs)),
                    "spread": [round(min(x["rate"] for x in rs)),
                               round(max(x["rate"] for x in rs))],
                    "cpu_events_per_s": round(statistics.median(x["cpu_rate"] for x in rs))}
             for name, rs in runs.items()}
    print(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
