"""A record's place among its consumer's ``capacity``, which parked work gives up.

The stage consumer (doers/kafka/concurrent_consumer.py) keeps at most
``capacity`` records in flight: the workers and one waiting item each. A
record parked on an infrastructure fault is in flight for as long as the
fault lasts; holding its place there, a handful of exposures of one mode
whose reference is missing from the CRDS cache would stop the stage for
every other mode. So the runner, when an item parks, *steps it aside*
(doers/work_item_runner.py): it leaves the count, the consumer fetches the
next record, and its offset stays uncommitted (a restart takes it up again).
The consumer sets the slot of each record's task here; the runner, which
knows nothing of Kafka, finds it through this context variable.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

_current: ContextVar[Slot | None] = ContextVar("calstream_consumer_slot", default=None)


class Slot:
    """One record's place; ``step_aside`` asks its consumer to free it."""

    def __init__(self, free: Callable[[], bool]) -> None:
        self._free = free
        self.aside = False

    def step_aside(self) -> bool:
        """Free the place (once); False when the consumer keeps it (too many aside)."""
        if not self.aside:
            self.aside = self._free()
        return self.aside


def hold(slot: Slot) -> None:
    """The slot of the record this task handles (set by its consumer)."""
    _current.set(slot)


def step_aside() -> bool:
    """Free the current record's place in its consumer, if it has one."""
    slot = _current.get()
    return slot.step_aside() if slot is not None else False
