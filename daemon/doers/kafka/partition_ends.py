"""The catalog's partition ends, asked of a broker again and again.

The supervisor asks an external broker every few seconds whether it lost its
records (doers/broker_supervisor.py, deciders/broker_records.py). A client
made for each check was a connection, a TLS handshake and a SASL exchange
each time on a production broker, for two small requests. One client is
kept between checks; a check that fails drops it (the broker gone, or
started again: its connection is no use), and the next check makes one.
A kept client that fails is
dropped and the check asked once more through a new one at once. Its
owner closes it when done (``aclose``): a client left open keeps its
connection and its tasks.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from calstream.daemon.doers.kafka import clients
from calstream.daemon.operations.config import Config
from calstream.topics.catalog import Topics


class PartitionEnds:
    """``await ends()``: each partition of the catalog's topics (those the
    broker has) and its end as ListOffsets answers it, no record read: one
    metadata and one ListOffsets request. Not where the end is (on tansu the
    first offset of the last batch + 1), but never lower than before on a
    broker that kept its records, which is what the supervisor compares.
    Not for concurrent use: the supervisor's one task asks it."""

    def __init__(self, cfg: Config, topics: Topics):
        self.cfg = cfg
        self.topics = topics
        self.client: AIOKafkaConsumer | None = None  # kept between checks

    async def __call__(self) -> dict[tuple[str, int], int]:
        if self.client is not None:
            try:
                return await self._ask()
            except Exception:  # noqa: BLE001 - asked once more, through a new client
                # A broker started again between two checks broke the kept
                # connection: a new client asks at once, and finds the loss
                # when it happens rather than a check later.
                pass
        return await self._ask()

    async def _ask(self) -> dict[tuple[str, int], int]:
        try:
            client = await self._client()
            # Metadata asked afresh each time: a topic may have been made
            # again, with other partitions, since the last check.
            existing = await client.topics()
            partitions = [TopicPartition(name, p) for name, _ in self.topics.all()
                          if name in existing
                          for p in sorted(client.partitions_for_topic(name) or ())]
            ends = await client.end_offsets(partitions) if partitions else {}
        except BaseException:
            await self.aclose()  # a failed check (or its cancellation) keeps no client
            raise
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def _client(self) -> AIOKafkaConsumer:
        if self.client is None:
            client = clients.reader(self.cfg)
            try:
                await client.start()
            except BaseException:
                await clients.stopped(client)  # one that failed to connect is stopped too
                raise
            self.client = client
        return self.client

    async def aclose(self) -> None:
        """Close the kept client, if any (shielded: also when cancelled)."""
        client, self.client = self.client, None
        if client is not None:
            await clients.stopped(client)
