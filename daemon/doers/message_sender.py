"""Sending a few messages from a command (a release, a plan, a promotion, a
replay): one producer for the batch, every send acknowledged (acks=all)
before the next, the producer closed whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from calstream.daemon.doers import kafka
from calstream.daemon.doers.kafka.publisher import RecordRefused, record_refused
from calstream.daemon.operations.config import Config
from calstream.topics import contract


class MessageRefused(RecordRefused):
    """A command's message the broker refused for what it is: sent again it
    is refused again, so the command stops there, in one line and exit 1
    (cli/main.py), saying how many went before it. Before session 44 it
    ended in aiokafka's traceback."""

    def __init__(self, refused: RecordRefused, sent: int):
        contract.InvalidMessage.__init__(
            self, f"{refused}; {sent} message(s) sent before it, none after it: make the "
                  "topic take it (its max.message.bytes, its policy), then run the "
                  "command again")
        self.logical_topic, self.code, self.sent = refused.logical_topic, refused.code, sent


async def send_messages(cfg: Config, topic: str,
                        messages: Iterable[tuple[str, contract.Message]],
                        on_sent: Callable[[str], None] | None = None) -> int:
    """Send each (key, message) to ``topic`` in order; returns how many were
    sent. ``on_sent(key)`` once each is acknowledged: what went is known to
    a caller stopped half-way. A message the broker refuses for what it is
    raises MessageRefused."""
    sent = 0
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for key, message in messages:
            try:
                await producer.send_and_wait(topic, contract.encode(message), key=key.encode())
            except Exception as exc:  # noqa: BLE001 - a record's refusal named, the rest raised
                if (refused := record_refused(exc, topic, key)) is None:
                    raise
                raise MessageRefused(refused, sent) from exc
            sent += 1
            if on_sent is not None:
                on_sent(key)
    finally:
        await producer.stop()
    return sent
