"""The supervisor's check of an external broker's partition ends keeps one
client (doers/kafka/partition_ends.py): a client a check (every 5 s) was a
TLS handshake and a SASL exchange each on a production broker. Made again
only after a check failed (the broker gone), and closed with the daemon:
no client, and none of its tasks, outlives it."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaError

from calstream.daemon.doers import broker_supervisor, kafka
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.kafka import clients
from calstream.topics.catalog import Topics

from .support import daemon_config, running_daemon, until

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def live_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if not t.done()}


@pytest.fixture
def readers_made(monkeypatch) -> list:
    """Each reader client made from here on (the real one, counted)."""
    made = []
    real = clients.reader

    def counted(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(clients, "reader", counted)
    return made


async def test_a_running_daemons_checks_reuse_one_client(tmp_path, unique_prefix, monkeypatch,
                                                         readers_made):
    monkeypatch.setattr(broker_supervisor, "RECORDS_EVERY", 0.3)
    with EmbeddedBroker(tmp_path / "external") as external:
        cfg = daemon_config(tmp_path, external.bootstrap, unique_prefix, roles=["watcher"])
        async with running_daemon(cfg) as daemon:
            supervisor = daemon.supervisor
            await until(lambda: supervisor.records_checked >= 1)
            made = len(readers_made)
            await until(lambda: supervisor.records_checked >= 5)
            assert len(readers_made) == made  # four more checks, no client more
            kept = supervisor.records.client
            assert kept is not None and kept in readers_made
        assert supervisor.records.client is None  # closed with the daemon
        assert kept._closed


async def test_a_check_that_fails_drops_its_client_and_the_next_makes_one(
        tmp_path, unique_prefix, readers_made):
    before = live_tasks()
    with EmbeddedBroker(tmp_path / "external") as external:
        cfg = daemon_config(tmp_path, external.bootstrap, unique_prefix, roles=["watcher"],
                            broker_timeout_seconds=2.0)
        topics = Topics(cfg.topic_prefix)
        await kafka.create_topics(cfg, topics)
        ends = kafka.PartitionEnds(cfg, topics)
        first = await ends()
        assert first and await ends() == first and len(readers_made) == 1
        external.stop()
        with pytest.raises((KafkaError, OSError)):
            await ends()
        # A broker gone: the kept client dropped, and the new one asked at
        # once in its stead too.
        assert ends.client is None and len(readers_made) == 2
        assert all(c._closed for c in readers_made)
        external.start()  # the same port, empty
        await kafka.create_topics(cfg, topics)
        assert await ends() and await ends() and len(readers_made) == 3
        await ends.aclose()
        assert ends.client is None and readers_made[2]._closed
    assert live_tasks() <= before  # none of the clients' tasks left behind
