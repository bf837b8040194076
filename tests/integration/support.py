"""Helpers for tests that run the daemon against the real embedded broker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import anyio
from prometheus_client.parser import text_string_to_metric_families

from calstream.daemon.doers import kafka
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.operations.config import Config, load
from calstream.daemon.runtime import Daemon
from calstream.topics import contract
from calstream.topics.catalog import Topics

# The roles of a test that needs no stage 3. A daemon runs only the roles its
# test needs: a worker's warm-up is a jwst import, about 6 s of CPU, which on
# a small machine is much of a test.
UP_TO_STAGE2 = ["watcher", "detector1", "planner", "stage2"]

# For a test whose workers must be there before its first item (production's default).
WARM_AT_START = {"warm_workers": "at_start"}
# For a test whose broker stops answering (SIGSTOP) or dies: each request,
# and a topic read, gives up after 4 s instead of production's 30, so the
# test waits out the same faults in a fraction of the time (some wait it two
# or three times). Still above what a loaded machine's tansu takes to answer,
# so no answer that merely comes late is taken for a broker gone: the 13 tests
# that use it passed at 4 s beside a 3-worker suite run and another helper's
# tests (load ~5 on 2 cores), and test_wedged_broker runs at 2-3 s. (8 s until
# session 40: ~50 worker-seconds more.)
BROKER_TIMEOUT = {"broker_timeout_seconds": 4.0}


def daemon_config(tmp_path: Path, broker: str, prefix: str, **overrides) -> Config:
    # One warm worker per stage unless a test is about concurrency: each more
    # worker is another jwst import at start, and `make test` runs two test
    # files at once (pytest-xdist), which keeps both cores busy already.
    # Pools warm on their first item, not at start: most tests feed only some
    # of their daemon's stages, and a pool that gets no work then costs no
    # jwst import. A test about warm workers (one it freezes before sending
    # work) gives WARM_AT_START.
    flags = {"work_dir": tmp_path / "work", "kafka_bootstrap": broker, "topic_prefix": prefix,
             "group_prefix": prefix.rstrip("."), "workers": 1, "warm_workers": "on_first_work",
             "metrics_address": "127.0.0.1:0", "fast_group_timing": True,
             "settle_seconds": 0.2, "poll_interval": 0.2, "retry_backoff": 0.2}
    flags.update(overrides)
    return load(None, env={}, flags=flags)


@contextlib.contextmanager
def refused_address(tmp_path: Path):
    """A loopback address where nothing answers during the block. Its port is
    held (bound, never listening: EmbeddedBroker.reserve_port), so no other
    process can take it meanwhile, as one free_port() chose could be."""
    held = EmbeddedBroker(tmp_path / "refused-address")
    try:
        yield f"127.0.0.1:{held.reserve_port()}"
    finally:
        held.stop()


@contextlib.asynccontextmanager
async def running_daemon(cfg: Config):
    daemon = Daemon(cfg)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        try:
            yield daemon
        finally:
            tg.cancel_scope.cancel()


async def wait_for(cfg: Config, logical: list[str], done: Callable[[list], bool],
                   timeout: float = 120.0) -> list:
    """Read topics from the beginning until ``done(messages)``; return the
    messages (contract.Message, or InvalidMessage for invalid records)."""
    topics = Topics(cfg.topic_prefix)
    seen: list = []
    with anyio.fail_after(timeout):
        async for _record, msg in kafka.read_topics(cfg, [topics.name(t) for t in logical]):
            seen.append(msg)
            if done(seen):
                return seen
    raise AssertionError("unreachable")


async def read_all(cfg: Config, logical: list[str], timeout: float = 60.0) -> list:
    """Everything on the topics now, exactly: a marker is written to every
    partition first, and reading stops when every marker has come back."""
    topics = Topics(cfg.topic_prefix)
    names = [topics.name(t) for t in logical]
    marker = f"calstream-test-marker-{time.time_ns()}".encode()
    producer = kafka.producer(cfg)
    await producer.start()
    expected = set()
    try:
        for name in names:
            for partition in await producer.partitions_for(name):
                await producer.send_and_wait(name, marker, partition=partition)
                expected.add((name, partition))
    finally:
        await producer.stop()
    seen: list = []
    with anyio.fail_after(timeout):
        async for record, msg in kafka.read_topics(cfg, names):
            if record.value == marker:
                expected.discard((record.topic, record.partition))
                if not expected:
                    return seen
            else:
                seen.append(msg)
    raise AssertionError("unreachable")


async def announced_then_decided(cfg: Config, arrival: contract.Message,
                                 timeout: float = 240.0) -> list:
    """``arrival`` sent on the raw topic by hand (the watcher bypassed), then
    what the topics say once it has a product event or a dead letter."""
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        await producer.send_and_wait(Topics(cfg.topic_prefix).name("raw"),
                                     contract.encode(arrival),
                                     key=arrival["exposure_id"].encode())
    finally:
        await producer.stop()

    def decided(ms) -> bool:
        return bool(products(ms)) or any(
            isinstance(m, contract.Message) and m.type == "dead_letter" for m in ms)

    return await wait_for(cfg, ["products", "deadletter"], decided, timeout=timeout)


def products(messages, stage: str = "detector1") -> list[contract.Message]:
    return [m for m in messages if isinstance(m, contract.Message) and m.type == "product"
            and m["stage"] == stage]


def in_namespace(messages, stage: str, namespace: str) -> list[contract.Message]:
    return [p for p in products(messages, stage) if p.get("namespace", "live") == namespace]


def cli(cfg: Config, *args: str) -> subprocess.CompletedProcess:
    """`calstream ARGS` against the test's broker, topics and product tree."""
    return subprocess.run(
        [sys.executable, "-m", "calstream.daemon.operations.cli", *args, "--kafka-bootstrap",
         cfg.kafka_bootstrap, "--topic-prefix", cfg.topic_prefix, "--products",
         str(cfg.products)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
        env=dict(os.environ))


def scrape(address: str) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all((k, str(x)) in ls for k, x in labels.items()))


def worker_processes() -> list[int]:
    """The warm calibration workers of this process's daemons: the children
    of the worker server, itself a child of this process, as the session's
    tansu and multiprocessing's resource tracker are (workers are forks of
    the server: daemon/doers/worker_forkserver.py)."""
    parents = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                          if ":\t" in line)
            parents[int(status.parent.name)] = (int(fields["PPid"]), fields["Name"])
    mine = {pid for pid, (ppid, name) in parents.items()
            if ppid == os.getpid() and "tansu" not in name}
    return [pid for pid, (ppid, _) in parents.items() if ppid in mine]


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for ``condition()`` to hold, looking every 0.2 s."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.2)


def parked(daemon, stage: str, cause: str = "broker_unreachable") -> bool:
    """Whether the daemon's operations endpoint counts an item of ``stage``
    parked on ``cause`` (False until the endpoint is up)."""
    return daemon.ops is not None and metric(scrape(daemon.ops.address), "calstream_parked_items",
                                             stage=stage, cause=cause) >= 1


def compact_at_every_snapshot(monkeypatch) -> None:
    """A planner that snapshots every two records and is over its memory
    budget at every look, so that every snapshot is followed by a compaction.
    A reading that grows each time: a planner started again from its
    snapshot uses less than before, by how much depends on the allocator,
    and the rule (tests/unit/test_planner_memory.py) waits for growth."""
    from calstream.daemon.deciders import planner_memory
    from calstream.daemon.doers import planner_compaction, planner_restore

    monkeypatch.setattr(planner_restore, "SNAPSHOT_EVERY_RECORDS", 2)
    monkeypatch.setattr(planner_memory, "MIN_RECORDS", 1)
    readings = iter(range(2**30, 2**40, 2**20))
    monkeypatch.setattr(planner_compaction, "resident_in_use_bytes", lambda: next(readings))


def broker_paused_before_first(monkeypatch, owner: type, name: str, broker: EmbeddedBroker,
                               label: str) -> list[str]:
    """``owner.name`` patched so that ``broker`` stops answering (SIGSTOP) just
    before its first call: a fault at that exact moment of the daemon. The
    list returned gets ``label`` when it happened; the test sends SIGCONT."""
    paused: list[str] = []
    original = getattr(owner, name)

    async def pausing_first(self, *args, **kwargs):
        if not paused:
            os.kill(broker.process.pid, signal.SIGSTOP)
            paused.append(label)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, pausing_first)
    return paused
