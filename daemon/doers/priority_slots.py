"""Turns at a fixed number of slots (the WorkerPool's workers), best priority
first and first come, first served within a priority: a live item that
arrives while replayed items wait is served before all of them."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import anyio


@dataclass(order=True)
class _Waiter:
    priority: int
    sequence: int
    event: anyio.Event = field(compare=False, default_factory=anyio.Event)
    granted: bool = field(compare=False, default=False)


class PrioritySlots:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: list[_Waiter] = []  # a heap
        self._sequence = 0

    @property
    def busy(self) -> int:
        return self.size - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, priority: int) -> None:
        """A slot; lower ``priority`` goes first."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        self._sequence += 1
        waiter = _Waiter(priority, self._sequence)
        heapq.heappush(self._waiters, waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                self._waiters.remove(waiter)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        if self._waiters:
            waiter = heapq.heappop(self._waiters)
            waiter.granted = True
            waiter.event.set()
        else:
            self._free += 1
