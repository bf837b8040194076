"""Work parked on one fault takes turns at trying it again: one probe at a time.

A reference missing from the CRDS cache for one mode parks every exposure of
that mode, and a full disk parks everything. If each parked item tried again
on its own every ``park_recheck_seconds``, a hundred parked items would be a
hundred failing runs a period, taking the workers from the work that can
succeed. Here the items parked on the same cause with the same *family*
(deciders/work_items.py: ``WorkItem.fault_family``, the stage, pipeline,
instrument, mode and CRDS context: what a fault of the infrastructure hits
alike) queue at a gate:

* the first in line waits its delay and then *probes*: its next attempt is
  the only one of the family under way;
* if the probe gets through (its products are out), the fault has cleared
  for the family: the gate opens and every item waiting there tries at once;
* if it parks again, it goes to the back of the line and the next item
  probes after its own delay, so items whose fault differs within a family
  (two detectors, one reference missing) each get their turn.

Only a parked item's success opens the gate: work of the same family that
never parked (the other detector) says nothing about the fault the parked
ones met, and opening on it would send every parked item to fail again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import anyio

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers import consumer_slots
from calstream.daemon.doers.parking import Parked
from calstream.daemon.doers.preview_gate import PreviewGate
from calstream.daemon.operations.metrics import Metrics

log = logging.getLogger("calstream.stage")


class _Gate:
    def __init__(self) -> None:
        self.line = anyio.Lock()  # held by the probe; fair: the waiters in parking order
        self.opened = anyio.Event()  # set when a probe gets through; a new one after
        self.waiting = 0


class ProbeTurn:
    """The right to make the family's next attempt; given back by ``ParkGates.tried``."""

    def __init__(self, gate: _Gate) -> None:
        self.gate: _Gate | None = gate

    def give_back(self) -> None:
        if self.gate is not None:
            self.gate.line.release()
            self.gate = None


class ParkGates:
    def __init__(self) -> None:
        self._gates: dict[Hashable, _Gate] = {}

    def waiting(self, family: Hashable) -> int:
        gate = self._gates.get(family)
        return gate.waiting if gate else 0

    def has_parked(self, family: Hashable) -> bool:
        """Whether items of ``family`` are parked: waiting, or one probing."""
        gate = self._gates.get(family)
        return gate is not None and (gate.waiting > 0 or gate.line.locked())

    async def wait(self, family: Hashable, delay: float) -> ProbeTurn | None:
        """A parked item's wait before its next try: its turn to probe, after
        ``delay`` (a ProbeTurn, to give back through ``tried``), or None when a
        probe of its family got through meanwhile (try now, with the rest)."""
        gate = self._gates.setdefault(family, _Gate())
        opened = gate.opened
        gate.waiting += 1
        try:
            if not await _first_in_line(gate.line, opened):
                return None
            try:
                with anyio.move_on_after(delay):
                    await opened.wait()
            except BaseException:
                gate.line.release()
                raise
            if opened.is_set():
                gate.line.release()
                return None
            return ProbeTurn(gate)
        finally:
            gate.waiting -= 1
            if gate.waiting == 0 and not gate.line.locked() and self._gates.get(family) is gate:
                del self._gates[family]

    def tried(self, family: Hashable, turn: ProbeTurn | None, got_through: bool) -> None:
        """After a parked item's attempt: a probe that got through opens its
        family's gate; the turn (if it held one) goes to the next in line."""
        gate = turn.gate if turn is not None else None
        if got_through and gate is not None:
            gate.opened.set()
            gate.opened = anyio.Event()
        if turn is not None:
            turn.give_back()
            if gate is not None and gate.waiting == 0 and self._gates.get(family) is gate:
                del self._gates[family]


async def _first_in_line(line: anyio.Lock, opened: anyio.Event) -> bool:
    """Whether this task now holds ``line`` (True) or ``opened`` was set first (False)."""
    if opened.is_set():
        return False
    got = False
    async with anyio.create_task_group() as tg:
        async def watch() -> None:
            await opened.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await line.acquire()
        got = True
        tg.cancel_scope.cancel()
    return got


class ParkedItem:
    """One work item's stay in the parked state, across its attempts: the
    metric, the log lines, its consumer place given up, its turns at the gate."""

    def __init__(self, gates: ParkGates, metrics: Metrics, item: WorkItem,
                 recheck_seconds: float, previews: PreviewGate) -> None:
        self.gates, self.metrics, self.item, self.previews = gates, metrics, item, previews
        self.recheck_seconds = recheck_seconds
        self.parked: Parked | None = None
        self.family: Hashable = None
        self.turn: ProbeTurn | None = None

    async def park(self, cause: str, delay: float, detail: str,
                   may_have_cleared: Callable[[], bool] | None = None,
                   root: str | None = None) -> None:
        """The attempt parked on ``cause``: wait for this item's next try.
        ``may_have_cleared`` (a cheap look, run in a thread at each of the
        item's turns, e.g. whether a broken reference file changed): while it
        says no, the turn passes to the next in line with no run. ``root``: the
        directory it was writing under (a disk fault's, labelled on the metric)."""
        item = self.item
        # At every park, not only the first: one its consumer kept (max_parked_aside
        # reached) steps aside once others have gone on.
        aside = consumer_slots.step_aside()
        if self.parked is None:
            self.parked = Parked(self.metrics, item.stage, cause, root)
            log.warning("%s: %s parked on an infrastructure fault (%s): %s; re-checked every "
                        "%.0fs (one item of its kind at a time), not dead-lettered%s", item.name,
                        item.pipeline, cause, detail, self.recheck_seconds,
                        "; the next record taken in its place" if aside else "",
                        extra={**item.log_context, "fault": "infrastructure"})
        elif was := self.parked.moved(cause, root):
            log.warning("%s: %s now parked on %s, no longer on %s: %s", item.name,
                        item.pipeline, cause, was, detail,
                        extra={**item.log_context, "fault": "infrastructure"})
        self.family = (*item.fault_family, cause)
        while True:
            with self.previews.idle():  # waiting, it calibrates nothing
                self.turn = await self.gates.wait(self.family, delay)
            if self.turn is None or may_have_cleared is None or \
                    await anyio.to_thread.run_sync(may_have_cleared):
                return
            log.debug("%s: its fault (%s) is as it was: not run this turn", item.name, cause,
                      extra=item.log_context)
            self.gates.tried(self.family, self.turn, got_through=False)
            self.turn = None

    def tried(self, action: str) -> None:
        """After each attempt: what it says of the fault, for the others of its kind."""
        if self.parked is not None:
            self.gates.tried(self.family, self.turn, got_through=action == "publish")
            self.turn = None

    def end(self, action: str | None) -> None:
        """The item is done (``action``: its last step; None: cancelled)."""
        if self.turn is not None:
            self.turn.give_back()
            self.turn = None
        if self.parked is None:
            return
        if action is not None:
            log.warning("%s: resumed after %.1fs parked (%s): %s", self.item.name,
                        self.parked.elapsed(), self.parked.cause, action,
                        extra={**self.item.log_context, "fault": "infrastructure"})
        self.parked.release()
        self.parked = None
