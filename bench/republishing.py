"""What a broker that lost its topics costs to fill again: one by one or together.

A start on the embedded broker (its topics in memory) re-publishes every
product event of the product store, every plan and hold of the planner's
ledger and the dead letters each daemon kept (doers/broker_recovery.py,
doers/planner_disk_records.py). Until session 32 each record waited for its
acknowledgement before the next was sent: a round trip each. Now they go
together (``Publisher.publish_all``). This bench publishes the same ``--events``
product events (bench_planner.py's synthetic ones) to an embedded tansu both
ways, taking turns (ABAB, ``--rounds`` each), and reports wall and CPU
seconds (this process's; the broker's own CPU beside it) per 1,000 events.

    .venv/bin/python bench/republishing.py [--events 5000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_planner  # noqa: E402
from measuring import tree_cpu  # noqa: E402

from calstream.daemon.doers import kafka  # noqa: E402
from calstream.daemon.doers.embedded_broker import EmbeddedBroker  # noqa: E402
from calstream.daemon.doers.kafka.publisher import Publisher  # noqa: E402
from calstream.daemon.operations.config import load  # noqa: E402
from calstream.daemon.operations.metrics import Metrics  # noqa: E402
from calstream.topics import contract  # noqa: E402
from calstream.topics.catalog import Topics  # noqa: E402

WAYS = ("one by one", "together")


async def _round(publisher: Publisher, events: list[contract.Message], together: bool,
                 broker_pid: int) -> tuple[float, float, float]:
    items = [("products", e["program"], contract.Message("product", dict(e.body)))
             for e in events]
    wall, cpu, broker = time.perf_counter(), time.process_time(), tree_cpu(broker_pid)
    if together:
        await publisher.publish_all(items)
    else:
        for item in items:
            await publisher.publish(*item)
    return (time.perf_counter() - wall, time.process_time() - cpu,
            tree_cpu(broker_pid) - broker)


async def _main(bootstrap: str, broker_pid: int, tmp: Path, args) -> dict:
    cfg = load(None, env={}, flags={"work_dir": tmp / "work", "kafka_bootstrap": bootstrap,
                                    "topic_prefix": "bench.", "group_prefix": "bench"})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    size = 1000
    programs = -(-args.events // (2 * size))
    events = [contract.decode(raw, expected="product") for p in range(programs)
              for raw in bench_planner.program_records(p + 1, size)][:args.events]
    producer = kafka.producer(cfg)
    await producer.start()
    publisher = Publisher(producer, topics, Metrics())
    runs: dict[str, list[tuple[float, float, float]]] = {way: [] for way in WAYS}
    try:
        for r in range(args.rounds):
            for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
                runs[way].append(await _round(publisher, events, way == "together", broker_pid))
                w, c, b = runs[way][-1]
                print(f"round {r + 1}: {way:10s} wall {w:6.2f} s  cpu {c:6.2f} s  "
                      f"broker cpu {b:6.2f} s", flush=True)
    finally:
        await producer.stop()
    per = 1000 / len(events)

    def figures(xs: list[float]) -> dict:
        return {"median": round(statistics.median(xs) * per, 3),
                "spread": [round(min(xs) * per, 3), round(max(xs) * per, 3)]}
    table = {way: {"wall_s_per_1000": figures([w for w, _, _ in rs]),
                   "cpu_s_per_1000": figures([c for _, c, _ in rs]),
                   "broker_cpu_s_per_1000": figures([b for _, _, b in rs])}
             for way, rs in runs.items()}
    base, new = runs[WAYS[0]], runs[WAYS[1]]
    table["together / one by one"] = {
        "wall": round(statistics.median(w for w, _, _ in new)
                      / statistics.median(w for w, _, _ in base), 3),
        "cpu": round(statistics.median(c for _, c, _ in new)
                     / statistics.median(c for _, c, _ in base), 3)}
    return {"events": len(events), "rounds": args.rounds, "load": os.getloadavg()[0], **table}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="calstream-republishing-"))
    try:
        with EmbeddedBroker(tmp / "broker") as broker:
            print(json.dumps(anyio.run(_main, broker.bootstrap, broker.process.pid, tmp, args),
                             indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
