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

The slot also restarts the record's stall clock when a worker begins its
run (``run_begins``: the runner has the pool call it at each attempt of an
item that has not parked; one that keeps its place while parked is judged
from when it was taken, as before, its probes' runs notwithstanding): a record
taken while every worker is busy (``capacity`` is the workers and one
waiting item each) waits behind runs of up to ``task_timeout``, then its own
run may take as long. Judged from when it was taken, two legitimate runs in a
row (two 40-minute spec2s) passed the stall limit (``task_timeout`` and 15
minutes) and made the daemon unready and paged CalstreamConsumerStalled. A
record that never gets a worker is still judged from when it was taken.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

_current: ContextVar[Slot | None] = ContextVar("calstream_consumer_slot", default=None)


class Slot:
    """One record's place; ``step_aside`` asks its consumer to free it."""

    def __init__(self, free: Callable[[], bool],
                 run_begins: Callable[[], None] | None = None) -> None:
        self._free = free
        self._run_begins = run_begins
        self.aside = False

    def run_begins(self) -> None:
        """A worker began this record's run: its stall clock starts again."""
        if self._run_begins is not None and not self.aside:
            self._run_begins()

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


def run_begins() -> None:
    """The current record's run began in a worker (its stall clock starts
    again), if the record has a consumer's slot."""
    slot = _current.get()
    if slot is not None:
        slot.run_begins()
