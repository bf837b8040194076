"""Kafka clients (aiokafka) configured the same way for every role.

Everything here must work on tansu and on Apache Kafka: no idempotent or
transactional producer (aiokafka cannot on tansu), acks=all, manual commits,
``auto_offset_reset="earliest"`` with committed offsets.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from calstream.daemon.operations.config import Config
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.kafka")


def client_options(cfg: Config) -> dict[str, Any]:
    sec = cfg.security
    opts: dict[str, Any] = {"bootstrap_servers": cfg.kafka_bootstrap,
                            "security_protocol": sec.protocol}
    if sec.protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=sec.ssl_cafile)
        if sec.ssl_certfile:
            ctx.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile)
        opts["ssl_context"] = ctx
    if sec.protocol.startswith("SASL_"):
        opts.update(sasl_mechanism=sec.sasl_mechanism or "PLAIN",
                    sasl_plain_username=sec.sasl_username,
                    sasl_plain_password=sec.sasl_password)
    return opts


def producer(cfg: Config) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_options(cfg), acks="all", linger_ms=5,
                            request_timeout_ms=30000)


def consumer(cfg: Config, group: str) -> AIOKafkaConsumer:
    """A group member with manual commits; the caller subscribes it."""
    timing: dict[str, int] = {}
    if cfg.fast_group_timing:
        # Kafka's defaults make the first join take ~5 s and a rejoin ~18 s on
        # tansu; tests and the demo use these (measured in notes/kafka-broker.md).
        timing = dict(session_timeout_ms=2000, heartbeat_interval_ms=300,
                      rebalance_timeout_ms=1000)
    return AIOKafkaConsumer(
        **client_options(cfg), group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=50,
        # Calibration never runs on the poll loop, so the default poll interval
        # holds; this is a backstop, not what keeps the member alive.
        max_poll_interval_ms=600000, **timing,
    )


def admin(cfg: Config) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(cfg), request_timeout_ms=30000)


async def create_topics(cfg: Config, topics: Topics, *, replication: int = 1) -> list[str]:
    """Create every catalog topic that does not exist yet; returns those created."""
    client = admin(cfg)
    await client.start()
    try:
        existing = set(await client.list_topics())
        missing = [(name, spec) for name, spec in topics.all() if name not in existing]
        created = []
        for name, spec in missing:
            try:
                await client.create_topics([NewTopic(name, spec.partitions, replication,
                                                     topic_configs=spec.config())])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another role created it meanwhile
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await client.close()


async def describe_catalog(cfg: Config, topics: Topics) -> list[dict[str, Any]]:
    """The catalog's topics as the broker has them (missing ones marked)."""
    client = admin(cfg)
    await client.start()
    try:
        existing = set(await client.list_topics())
        present = [name for name, _ in topics.all() if name in existing]
        partitions: dict[str, int] = {}
        if present:
            for t in await client.describe_topics(present):
                partitions[t["topic"]] = len(t.get("partitions", []))
        rows = []
        for name, spec in topics.all():
            rows.append({"topic": name, "exists": name in existing,
                         "partitions": partitions.get(name), "key": spec.key,
                         "message": spec.message or "-",
                         "policy": "compact" if spec.compacted else
                         (f"retain {spec.retention_ms // 86400000} d" if spec.retention_ms else "-")})
        others = sorted(existing - {name for name, _ in topics.all()})
        return rows + [{"topic": o, "exists": True, "partitions": None, "key": "", "message": "",
                        "policy": "(not calstream's)"} for o in others]
    finally:
        await client.close()


async def read_topics(cfg: Config, names: list[str]):
    """Yield (record, Message | InvalidMessage) from topics, from the beginning,
    without a consumer group.

    For observers (the demo, tests, subscribers): nothing is committed, every
    partition is read, and an invalid record is yielded with its error rather
    than stopping the reader.
    """
    from calstream.topics import contract

    client = AIOKafkaConsumer(*names, **client_options(cfg), group_id=None,
                              enable_auto_commit=False,
                              auto_offset_reset="earliest")
    await client.start()
    try:
        async for record in client:
            try:
                yield record, contract.decode(record.value)
            except contract.InvalidMessage as exc:
                yield record, exc
    finally:
        await client.stop()


async def read_to_end(cfg: Config, name: str) -> list:
    """Every record of a topic, from the beginning up to "now".

    "Now" is the high watermark each partition reported in a fetch response:
    end_offsets and seek_to_end are wrong on tansu (see the broker notes), the
    fetch response's high watermark is right on both brokers.
    """
    client = AIOKafkaConsumer(**client_options(cfg), group_id=None, enable_auto_commit=False)
    await client.start()
    try:
        await client.topics()  # refreshes metadata: the topic may be moments old
        partitions = client.partitions_for_topic(name) or set()
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        if not tps:
            return []
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        records = []
        while True:
            batch = await client.getmany(*tps, timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            highs = {tp: client.highwater(tp) for tp in tps}
            if all(h is not None for h in highs.values()):
                positions = {tp: await client.position(tp) for tp in tps}
                if all(positions[tp] >= highs[tp] for tp in tps):
                    return records
    finally:
        await client.stop()


async def is_empty(cfg: Config, name: str, timeout: float = 10.0) -> bool:
    """Whether a topic holds no record at all (every high watermark is 0)."""
    client = AIOKafkaConsumer(**client_options(cfg), group_id=None, enable_auto_commit=False)
    await client.start()
    try:
        await client.topics()
        tps = [TopicPartition(name, p) for p in sorted(client.partitions_for_topic(name) or ())]
        if not tps:
            return True
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await client.getmany(*tps, timeout_ms=200, max_records=1)
            if any(batch.values()):
                return False
            highs = [client.highwater(tp) for tp in tps]
            if all(h is not None for h in highs):
                return all(h == 0 for h in highs)
        raise TimeoutError(f"no fetch response for {name} within {timeout}s")
    finally:
        await client.stop()
