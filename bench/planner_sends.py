"""The planner's records decided and sent, on the embedded broker: CPU an event.

planner_on_broker.py times a whole planner-only daemon, whose rate moves
with where the fetches fall and with the process's other threads. This
bench holds everything but the loop's order of work still: one process,
one broker, bench_planner's programs (each detector1 event one stage-2
order) handed to a Planner as a fetch's records would be (``--fetch`` at a
time, acknowledged after each), its orders sent to the broker for real.
Three ways, taking turns (the order reversed every round), each on a new
Planner:

* **one by one, 16 KiB**: each record decided and its orders sent before
  the next is decided (``Planner._on_record``, the loop before session 31),
  with aiokafka's default batch size;
* **run, 16 KiB**: a run of records decided, then their orders sent
  (``Planner._on_records``), the same producer;
* **run, 256 KiB**: the same with calstream's producer
  (``doers/kafka/clients.py``: MAX_BATCH_BYTES).

Reported: the planner thread's CPU time per event (median of the rounds,
with the spread), and the ratio of each way to the first.

    .venv/bin/python bench/planner_sends.py [--rounds 6] [--programs 6] [--size 1000]
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_planner  # noqa: E402

from calstream.daemon.doers import kafka  # noqa: E402
from calstream.daemon.doers.embedded_broker import EmbeddedBroker  # noqa: E402
from calstream.daemon.doers.kafka.clients import client_options  # noqa: E402
from calstream.daemon.doers.kafka.publisher import Publisher  # noqa: E402
from calstream.daemon.doers.planner_loop import TAKEN_AHEAD, Planner  # noqa: E402
from calstream.daemon.operations.config import load  # noqa: E402
from calstream.daemon.operations.metrics import Metrics  # noqa: E402
from calstream.topics.catalog import Topics  # noqa: E402

Record = collections.namedtuple("Record", "topic partition offset key value timestamp")
WAYS = ("one by one, 16 KiB", "run, 16 KiB", "run, 256 KiB")


async def _timed(cfg, topics: Topics, producer, records: list, fetch: int, runs: bool) -> float:
    """Thread CPU microseconds an event for ``records`` through a new Planner."""
    metrics = Metrics()
    planner = Planner(cfg, publisher=Publisher(producer, topics, metrics), metrics=metrics,
                      topics=topics)
    planner.caught_up = True
    gc.collect()
    started = time.thread_time()
    for first in range(0, len(records), fetch):
        fetched = records[first:first + fetch]
        for at in range(0, len(fetched), TAKEN_AHEAD):
            chunk = fetched[at:at + TAKEN_AHEAD]
            if runs:
                await planner._on_records(chunk, set(), True)
            else:
                for record, taken in zip(chunk, planner._take_ahead(chunk), strict=True):
                    await planner._on_record(record, taken)
        await planner._settle()  # the fetch's orders acknowledged
    return (time.thread_time() - started) / len(records) * 1e6


async def _main(bootstrap: str, tmp: Path, args) -> dict:
    cfg = load(None, env={}, flags={"work_dir": tmp / "work", "kafka_bootstrap": bootstrap,
                                    "topic_prefix": "bench.", "group_prefix": "bench"})
    for d in (cfg.products, cfg.inbox):
        d.mkdir(parents=True, exist_ok=True)
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    products = topics.name("products")
    values = [r.replace(b'"/products/', f'"{cfg.products}/'.encode())
              .replace(b'"/inbox/', f'"{cfg.inbox}/'.encode())
              for p in range(args.programs) for r in bench_planner.program_records(p + 1, args.size)]
    records = [Record(products, 0, n, b"k", v, None) for n, v in enumerate(values)]
    small = AIOKafkaProducer(**client_options(cfg), acks="all", linger_ms=0)  # 16 KiB
    large = kafka.producer(cfg)
    for producer in (small, large):
        await producer.start()
    cpu: dict[str, list[float]] = {way: [] for way in WAYS}
    try:
        for r in range(args.rounds):
            for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
                producer = large if way.endswith("256 KiB") else small
                cpu[way].append(await _timed(cfg, topics, producer, records, args.fetch,
                                             runs=way.startswith("run")))
                print(f"round {r + 1}: {way:20s} {cpu[way][-1]:6.1f} us an event", flush=True)
    finally:
        for producer in (small, large):
            await producer.stop()
    base = statistics.median(cpu[WAYS[0]])
    return {"events": len(records), "rounds": args.rounds, "thread_cpu_us_per_event": {
        way: {"median": round(statistics.median(xs), 1), "spread": [round(min(xs), 1),
                                                                   round(max(xs), 1)],
              "vs_one_by_one": round(statistics.median(xs) / base, 3)}
        for way, xs in cpu.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--programs", type=int, default=6)
    ap.add_argument("--size", type=int, default=1000, help="exposures per program")
    ap.add_argument("--fetch", type=int, default=500, help="records a fetch hands over")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="calstream-planner-sends-"))
    try:  # a broker log of tens of MB: not left in /tmp
        with EmbeddedBroker(tmp / "broker") as broker:
            print(json.dumps(anyio.run(_main, broker.bootstrap, tmp, args), indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
