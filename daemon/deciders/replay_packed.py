"""A message a replay has chosen, kept as its JSON until it is sent (pure).

A replay chooses its items only once its whole source is read (the latest
record of each), so it holds every item it will republish until then: as
decoded Python objects an arrival took some 3.7 KB (its header copy, sixty
keywords), as its JSON about 1 KB; and it built every republished message
before sending the first, another 1.5 KB each (bench/replay_scan_memory.py,
session 45). A replay of everything (a mission's exposures, from the
product store's records) held all of that at once. ``Packed`` is read
like the body it keeps (each read decodes it: the replay reads a chosen
one a few times, a conflict's a few more); ``unpacked`` gives the body
once, for whoever reads it through. ``publishable`` judges the messages
to send one at a time, each built and dropped (built again as it is sent).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from calstream.topics import contract

if TYPE_CHECKING:  # replay_selection reads its messages through ``unpacked``
    from calstream.daemon.deciders.replay_selection import Candidate


class Packed(Mapping[str, Any]):
    """A message body (decoded JSON) kept as its compact JSON text."""

    __slots__ = ("raw",)

    def __init__(self, body: Mapping[str, Any]):
        self.raw = body.raw if isinstance(body, Packed) else \
            json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    def unpacked(self) -> dict[str, Any]:
        return json.loads(self.raw)

    def __getitem__(self, key: str) -> Any:
        return self.unpacked()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.unpacked().get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.unpacked())

    def __len__(self) -> int:
        return len(self.unpacked())


def unpacked(message: Mapping[str, Any]) -> Any:
    """The body ``message`` is (a ``Packed`` one decoded, once)."""
    return message.unpacked() if isinstance(message, Packed) else message


def publishable(candidates: list[Candidate],
                build: Callable[[Candidate], tuple[str, contract.Message]]
                ) -> tuple[list[Candidate], list[str]]:
    """(The candidates whose replayed message, ``build(c)``, fits in a
    record every reader takes, the names of those whose does not). A valid
    source record a few hundred bytes under that limit (anyone's to write;
    the door passes an arrival under 1 MB) is over it once it carries its
    replay object: its send raised half-way through the publishing, and the
    replay stopped there each time it was run. Judged before anything is
    sent; each message built here is dropped (built again as it is sent)."""
    fits, too_large = [], []
    for c in candidates:
        key, message = build(c)
        try:
            contract.within_limit(message)
        except contract.InvalidMessage:
            too_large.append(key)
            continue
        fits.append(c)
    return fits, too_large
