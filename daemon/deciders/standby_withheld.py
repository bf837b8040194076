"""What a standby planner withheld and what it saw published (pure), and the
rules that let a standby snapshot its state like the active planner does.

A standby decides everything and publishes nothing: its state counts as
ordered what it only withheld. Alone, that state is no truth about what was
sent, so a restart from it that forgot the withheld decisions would lose them
at the next takeover. Together with this memory it is: sent = ordered in the
state less what is withheld here. So a standby's snapshot carries the two
(``to_body``, under the body's ``"standby"`` key), and the offsets of the
followed output topics up to which ``published`` is complete; a restart from
it (a compaction in the same process or a kill -9) is the standby as it was,
and reading the outputs after those offsets forgets what the active planner
published meanwhile (docs/design.md, "A standby compacts too").
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from calstream.daemon.deciders.planner_records import Emit
from calstream.topics import contract

PUBLISHED_CAPACITY = 200_000  # event ids seen published, the most recent


class WithheldDecisions:
    """``pending``: decisions withheld and not (yet) seen published, by event
    id; ``published``: event ids seen on the followed topics (bounded)."""

    def __init__(self, capacity: int = PUBLISHED_CAPACITY):
        self.capacity = capacity
        self.pending: OrderedDict[str, Emit] = OrderedDict()
        self.published: OrderedDict[str, None] = OrderedDict()

    def withhold(self, emit: Emit) -> None:
        if emit.message.event_id in self.published:
            return  # the active planner sent it already
        self.pending[emit.message.event_id] = emit

    def seen_published(self, event_id: str) -> None:
        self.pending.pop(event_id, None)
        self.published[event_id] = None
        if len(self.published) > self.capacity:
            self.published.popitem(last=False)

    def take_all(self) -> list[Emit]:
        """What nobody published, to send at a takeover; forgotten here, with
        what was seen published: an acting planner withholds nothing, and up
        to ``capacity`` event ids would ride along in each of its snapshots
        (~13 MB at 200,000). Standing by again, it learns them anew."""
        pending = list(self.pending.values())
        self.pending.clear()
        self.published.clear()
        return pending

    # -- in a snapshot -----------------------------------------------------------
    def to_body(self) -> dict[str, Any]:
        """JSON-able; taken on the planner's thread (new lists: the memory
        changes on while the snapshot is encoded in another)."""
        return {"withheld": [[e.topic, e.key, e.message.type, e.message.body]
                             for e in self.pending.values()],
                "published": list(self.published)}

    @classmethod
    def from_body(cls, part: Any, capacity: int = PUBLISHED_CAPACITY) -> WithheldDecisions:
        """The memory a snapshot carries (None: the snapshot carries none).
        A file is untrusted: any other shape is a ValueError."""
        memory = cls(capacity)
        if part is None:
            return memory
        if type(part) is not dict or type(part.get("withheld")) is not list \
                or type(part.get("published")) is not list:
            raise ValueError("its standby part is not {withheld: [...], published: [...]}")
        for row in part["withheld"]:
            if type(row) is not list or len(row) != 4 \
                    or not all(type(x) is str for x in row[:3]) or type(row[3]) is not dict \
                    or type(row[3].get("event_id")) is not str:
                raise ValueError("a withheld decision that is not [topic, key, type, body]")
            topic, key, kind, body = row
            memory.pending[body["event_id"]] = Emit(topic, key, contract.Message(kind, body))
        for event_id in part["published"][-capacity:]:
            if type(event_id) is not str:
                raise ValueError("a published event id that is not a text")
            memory.published[event_id] = None
        return memory


def may_snapshot(role: str) -> bool:
    """Active or standing by, a planner's state and withheld decisions are a
    whole; while taking over (granted, reading what the old leader sent) it
    snapshots nothing, so that a compaction never delays a takeover."""
    return role in ("active", "standby")


def usable_without_following(part: Any) -> bool:
    """Can a planner that follows no other (one planner: ``planner_lease =
    false``) start from a snapshot with this standby part? Only if nothing
    is withheld in it: such a planner could not tell which of those
    decisions the old active planner sent, so it would lose them."""
    return not (type(part) is dict and part.get("withheld"))
