"""Reading a replay's source topic: every record up to "now", and what each
partition still retains (its first offset and time), for the selection and
coverage that ``deciders/replay_selection.py`` decides."""

from __future__ import annotations

from calstream.daemon.deciders.replay_selection import Candidate, PartitionScan, record_time
from calstream.daemon.doers import kafka
from calstream.daemon.operations.config import Config, ConfigError
from calstream.topics import contract


async def scan(cfg: Config, name: str) -> tuple[list[Candidate], list[PartitionScan], int]:
    """Every record of ``name`` up to the high watermarks; (candidates,
    partitions, invalid records skipped)."""
    async with kafka.open_reader(cfg, [name]) as reader:
        if not reader.partitions:
            raise ConfigError(f"topic {name} does not exist on {cfg.kafka_bootstrap}")
        found: list[Candidate] = []
        scans = {tp.partition: PartitionScan(tp.partition, 0) for tp in reader.partitions}
        invalid = 0
        # Bounded by the broker's silence, not by the topic's length: months of
        # records may take minutes to read, a broker gone quiet must not take for ever.
        async for batch in reader.batches_to_end(stall_seconds=cfg.broker_timeout_seconds):
            for r in batch:
                s = scans[r.partition]
                if s.first_offset is None:
                    s.first_offset = r.offset
                    s.first_time = record_time(r.timestamp)
                try:
                    message = contract.decode(r.value)
                except contract.InvalidMessage:
                    invalid += 1  # the stage consumers dead-letter these
                    continue
                found.append(Candidate(r.partition, r.offset, r.timestamp, message.body))
        for tp, high in reader.high_watermarks().items():
            scans[tp.partition].high_watermark = high
        return found, list(scans.values()), invalid
