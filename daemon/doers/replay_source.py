"""Reading a replay's source topic: every record up to "now", and what each
partition still retains (its first offset and time), for the selection and
coverage that ``deciders/replay_selection.py`` decides."""

from __future__ import annotations

import datetime as dt

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition

from calstream.daemon.deciders.replay_selection import Candidate, PartitionScan
from calstream.daemon.doers.kafka import clients as kafka
from calstream.daemon.operations.config import Config, ConfigError
from calstream.topics import contract


async def scan(cfg: Config, name: str) -> tuple[list[Candidate], list[PartitionScan], int]:
    """Every record of ``name`` up to the high watermarks; (candidates,
    partitions, invalid records skipped)."""
    client = AIOKafkaConsumer(**kafka.client_options(cfg), group_id=None,
                              enable_auto_commit=False)
    await client.start()
    try:
        await client.topics()
        tps = [TopicPartition(name, p) for p in sorted(client.partitions_for_topic(name) or ())]
        if not tps:
            raise ConfigError(f"topic {name} does not exist on {cfg.kafka_bootstrap}")
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        found: list[Candidate] = []
        scans = {tp.partition: PartitionScan(tp.partition, 0) for tp in tps}
        invalid = 0
        with anyio.fail_after(120):
            while True:
                batch = await client.getmany(*tps, timeout_ms=200)
                for tp, records in batch.items():
                    s = scans[tp.partition]
                    for r in records:
                        if s.first_offset is None:
                            s.first_offset = r.offset
                            s.first_time = dt.datetime.fromtimestamp(r.timestamp / 1000, dt.UTC)
                        try:
                            message = contract.decode(r.value)
                        except contract.InvalidMessage:
                            invalid += 1  # the stage consumers dead-letter these
                            continue
                        found.append(Candidate(tp.partition, r.offset, r.timestamp, message.body))
                highs = {tp: client.highwater(tp) for tp in tps}
                if all(h is not None for h in highs.values()):
                    positions = {tp: await client.position(tp) for tp in tps}
                    if all(positions[tp] >= highs[tp] for tp in tps):
                        for tp in tps:
                            scans[tp.partition].high_watermark = highs[tp]
                        return found, list(scans.values()), invalid
    finally:
        await client.stop()
