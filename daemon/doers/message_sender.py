"""Sending a few messages from a command (a release, a plan, a promotion, a
replay): one producer for the batch, every send acknowledged (acks=all)
before the next, the producer closed whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from calstream.daemon.doers import kafka
from calstream.daemon.operations.config import Config
from calstream.topics import contract


async def send_messages(cfg: Config, topic: str,
                        messages: Iterable[tuple[str, contract.Message]],
                        on_sent: Callable[[str], None] | None = None) -> int:
    """Send each (key, message) to ``topic`` in order; returns how many were
    sent. ``on_sent(key)`` once each is acknowledged: what went is known to
    a caller stopped half-way."""
    sent = 0
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for key, message in messages:
            await producer.send_and_wait(topic, contract.encode(message), key=key.encode())
            sent += 1
            if on_sent is not None:
                on_sent(key)
    finally:
        await producer.stop()
    return sent
