"""Reading a replay's source topic: every record up to "now", each judged as
it comes by the replay's sieve (``deciders/replay_sieve.py``), which keeps
what the selection takes and what each partition still retains (its first
offset and time), for the coverage ``deciders/replay_selection.py`` decides."""

from __future__ import annotations

from calstream.daemon.deciders.replay_sieve import ScanSieve
from calstream.daemon.doers import kafka
from calstream.daemon.operations.config import Config, ConfigError


async def scan(cfg: Config, name: str, sieve: ScanSieve) -> ScanSieve:
    """Every record of ``name`` up to the high watermarks, handed to
    ``sieve`` (returned, with every partition's high watermark set)."""
    async with kafka.open_reader(cfg, [name]) as reader:
        if not reader.partitions:
            raise ConfigError(f"topic {name} does not exist on {cfg.kafka_bootstrap}")
        for tp in reader.partitions:
            sieve.partition(tp.partition)
        # Bounded by the broker's silence, not by the topic's length: months of
        # records may take minutes to read, a broker gone quiet must not take for ever.
        async for batch in reader.batches_to_end(stall_seconds=cfg.broker_timeout_seconds):
            for r in batch:
                sieve.take(r)
        for tp, high in reader.high_watermarks().items():
            sieve.partition(tp.partition).high_watermark = high
        return sieve
