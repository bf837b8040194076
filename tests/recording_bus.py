"""A stand-in for the daemon's publisher in unit tests of the work-item
runner and its neighbours (no broker): it keeps what it was given, in order."""

from __future__ import annotations

from calstream.topics import contract


class RecordingBus:
    """``sent`` holds ``(topic, message)`` for each publication and
    ``("deadletter", category, reason)`` for each dead letter. ``encode``:
    encode each message first, as the real publisher does, so that one the
    contract refuses (too large, say) raises here too."""

    def __init__(self, *, encode: bool = False):
        self.sent: list[tuple] = []
        self.encode = encode

    async def publish(self, topic, key, message):
        if self.encode:
            contract.encode(message)
        self.sent.append((topic, message))

    async def dead_letter(self, *, category, reason="", **fields):
        self.sent.append(("deadletter", category, reason))
