"""Turns at a fixed number of slots (the WorkerPool's workers), best priority
first and first come, first served within a priority: a live item that
arrives while replayed items wait is served before all of them.

A slot is passed on in one of two ways. On the event loop, ``release`` wakes
the best waiter, which then starts its own work. From a thread, ``hand_over``
(the worker pool's, the moment a worker's run ends) gives the slot *and the
start of the waiter's work* to the best waiter at once, without waiting for
the event loop: the loop is then only told afterwards (issue 15: a busy loop
left a finished worker idle for several thread hops). The heap is shared
with that thread, hence the lock; the loop holds it only for heap operations.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

# What became of a waiter (``_Waiter.state``).
WAITING = "waiting"
GRANTED = "granted"  # a slot, given on the loop: the waiter starts its work itself
CHECKING = "checking"  # taken by a thread's hand_over, being checked
STARTED = "started"  # a slot and its work started by hand_over
DECLINED = "declined"  # hand_over found its work not needed (or the check failed): no slot
DROPPED = "dropped"  # cancelled while being checked: hand_over passed it by


@dataclass(order=True)
class _Waiter:
    priority: int
    sequence: int
    event: anyio.Event = field(compare=False, default_factory=anyio.Event)
    state: str = field(compare=False, default=WAITING)
    payload: Any = field(compare=False, default=None)  # what hand_over needs to start it
    cancelled: bool = field(compare=False, default=False)
    loop: Any = field(compare=False, default=None)


class PrioritySlots:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiters: list[_Waiter] = []  # a heap
        self._sequence = 0
        self.lock = threading.Lock()

    @property
    def busy(self) -> int:
        return self.size - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, priority: int, payload: Any = None) -> _Waiter | None:
        """A slot; lower ``priority`` goes first. None: the slot was free, or
        given on the loop (GRANTED); the caller starts its work. Otherwise the
        waiter as hand_over left it: STARTED (the slot is the caller's, its
        work started with ``payload``) or DECLINED (no slot). Cancelled once
        STARTED, the caller still owns both and must end them."""
        with self.lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return None
            self._sequence += 1
            waiter = _Waiter(priority, self._sequence, payload=payload,
                             loop=asyncio.get_running_loop())
            heapq.heappush(self._waiters, waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            with self.lock:
                state = waiter.state
                if state == WAITING:
                    self._waiters.remove(waiter)
                    heapq.heapify(self._waiters)
                elif state == CHECKING:
                    waiter.cancelled = True  # hand_over passes it by
            if state == GRANTED:
                self.release()  # handed a slot while being cancelled: pass it on
            # STARTED: the slot and the started work are the caller's to end
            # (it knows from its payload: see WorkerPool.run).
            raise
        return None if waiter.state == GRANTED else waiter

    def release(self) -> None:
        with self.lock:
            if not self._waiters:
                self._free += 1
                return
            waiter = heapq.heappop(self._waiters)
            waiter.state = GRANTED
        waiter.event.set()

    def hand_over(self, check: Callable[[Any], bool], start: Callable[[Any], None],
                  go_on: Callable[[], bool]) -> bool:
        """In a thread, by a slot's holder: pass its slot to the best waiter
        whose ``check(payload)`` (outside the lock: it may read files) says
        its work is still needed, and ``start(payload)`` that work (under the
        lock, so a cancelled waiter is never started). A waiter whose check
        says no or fails is woken DECLINED, and the next is tried. True: the
        slot was handed on (the caller must not release it). ``go_on()``,
        asked under the lock before a waiter is taken and before it is
        started, may stop it (the pool closing, the holder cancelled)."""
        while True:
            with self.lock:
                if not self._waiters or not go_on():
                    return False
                waiter = heapq.heappop(self._waiters)
                waiter.state = CHECKING
            try:
                needed = check(waiter.payload)
            except Exception:  # noqa: BLE001 - the waiter asks again itself, on the loop
                needed = None
            with self.lock:
                if waiter.cancelled:
                    waiter.state = DROPPED
                    continue
                requeued = needed is None or not go_on()
                if requeued:
                    # Back in line (its own check raises the error on the loop);
                    # the holder releases its slot, or already did meanwhile.
                    granted = self._requeue(waiter)
                else:
                    if needed:
                        start(waiter.payload)
                    waiter.state = STARTED if needed else DECLINED
            if requeued:
                if granted is not None:
                    _wake(granted)
                return False
            _wake(waiter)
            if needed:
                return True

    def _requeue(self, waiter: _Waiter) -> _Waiter | None:
        """Under the lock: ``waiter`` back in the heap; a slot freed meanwhile
        goes to the best waiter at once (returned, to be woken)."""
        waiter.state = WAITING
        heapq.heappush(self._waiters, waiter)
        if self._free <= 0:
            return None
        self._free -= 1
        best = heapq.heappop(self._waiters)
        best.state = GRANTED
        return best


def _wake(waiter: _Waiter) -> None:
    """Set a waiter's event from a thread (anyio's Event is the loop's alone)."""
    try:
        waiter.loop.call_soon_threadsafe(waiter.event.set)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass
