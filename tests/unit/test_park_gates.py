"""Items parked on one fault take turns at probing it (doers/park_gates.py).

Each test drives real tasks on the event loop with short delays; what it
asserts is who tried, in which order and how many at once, never how long
anything took (the fail_after bounds only turn a hang into a failure).
"""

from __future__ import annotations

import anyio
import pytest

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers import consumer_slots
from calstream.daemon.doers.park_gates import ParkedItem, ParkGates
from calstream.daemon.doers.preview_gate import PreviewGate
from calstream.daemon.operations.metrics import Metrics

pytestmark = pytest.mark.anyio

FAMILY = ("detector1", "calwebb_detector1", "MIRI", "MIR_IMAGE", None, "live", "crds_lookup")
OTHER = ("detector1", "calwebb_detector1", "NIRCAM", "NRC_IMAGE", None, "live", "crds_lookup")


class Fault:
    """A fault that lasts until ``clears_at`` attempts were made; records who tried."""

    def __init__(self, clears_at: int | None = None) -> None:
        self.tries: list[str] = []
        self.now_trying = 0
        self.most_at_once = 0
        self.clears_at = clears_at

    async def attempt(self, who: str) -> bool:
        self.tries.append(who)
        self.now_trying += 1
        self.most_at_once = max(self.most_at_once, self.now_trying)
        await anyio.sleep(0.005)  # a run takes time: overlapping tries would show
        self.now_trying -= 1
        return self.clears_at is not None and len(self.tries) >= self.clears_at


async def parked_item(gates: ParkGates, fault: Fault, who: str, family=FAMILY,
                      delay: float = 0.01, done: list | None = None) -> None:
    """A runner's loop for an item that has just parked: wait, try, until through."""
    while True:
        turn = await gates.wait(family, delay)
        through = await fault.attempt(who)
        gates.tried(family, turn, got_through=through)
        if through:
            if done is not None:
                done.append(who)
            return


async def test_one_probe_at_a_time_and_each_parked_item_gets_its_turn():
    gates, fault = ParkGates(), Fault(clears_at=None)
    with anyio.move_on_after(0.6):  # the fault never clears: the items just take turns
        async with anyio.create_task_group() as tg:
            for who in "abcd":
                tg.start_soon(parked_item, gates, fault, who)
                await anyio.sleep(0)  # parked in this order
    assert fault.most_at_once == 1
    assert len(fault.tries) >= 8, fault.tries  # two rounds at least
    # First parked, first to probe; then the line turns: each in its turn.
    assert fault.tries[:8] == list("abcdabcd")


async def test_a_probe_that_gets_through_lets_all_the_others_try_at_once():
    gates, fault = ParkGates(), Fault(clears_at=3)  # the third attempt finds it cleared
    done: list[str] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for who in "abcde":
                tg.start_soon(parked_item, gates, fault, who, FAMILY, 0.01, done)
                await anyio.sleep(0)
    # One at a time until 'c' got through; then the four others at once, none
    # of them waiting for its turn.
    assert fault.tries[:3] == ["a", "b", "c"]
    assert sorted(fault.tries[3:]) == ["a", "b", "d", "e"]
    assert fault.most_at_once == 4
    assert sorted(done) == list("abcde") and done[0] == "c"
    assert gates.waiting(FAMILY) == 0


async def test_families_do_not_wait_for_each_other():
    gates = ParkGates()
    stuck, fine = Fault(), Fault(clears_at=1)
    done: list[str] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(parked_item, gates, stuck, "miri", FAMILY, 60.0)  # a long turn
            await anyio.sleep(0)
            await parked_item(gates, fine, "nircam", OTHER, 0.01, done)
            tg.cancel_scope.cancel()
    assert done == ["nircam"] and stuck.tries == []


async def test_work_that_never_parked_does_not_open_the_gate():
    gates, fault = ParkGates(), Fault()
    turns: list = []

    async def waiter() -> None:
        turns.append(await gates.wait(FAMILY, 60.0))

    with anyio.move_on_after(0.2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.02)
            # Another exposure of the family, never parked, got through.
            gates.tried(FAMILY, None, got_through=True)
            await anyio.sleep(0.05)
    assert turns == [] and fault.tries == []  # still waiting its turn when cancelled


async def test_a_cancelled_probe_hands_the_turn_on():
    gates = ParkGates()
    order: list[str] = []

    async def holder(scope_box: list) -> None:
        with anyio.CancelScope() as scope:
            scope_box.append(scope)
            turn = await gates.wait(FAMILY, 0.0)
            try:
                order.append("holder has the turn")
                await anyio.sleep_forever()  # its attempt, cancelled (a shutdown)
            finally:
                turn.give_back()  # as ParkedItem.end does, whatever ends the item

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            box: list = []
            tg.start_soon(holder, box)
            await anyio.sleep(0.02)
            assert order == ["holder has the turn"]
            box[0].cancel()
            turn = await gates.wait(FAMILY, 0.0)
            order.append("next has the turn")
            gates.tried(FAMILY, turn, got_through=False)
    assert order == ["holder has the turn", "next has the turn"]
    assert gates.waiting(FAMILY) == 0


async def test_a_family_is_known_as_parked_while_one_waits_or_probes():
    gates = ParkGates()
    assert not gates.has_parked(FAMILY)
    turn = await gates.wait(FAMILY, 0.0)  # alone: its turn at once, probing
    assert gates.has_parked(FAMILY) and not gates.has_parked(OTHER)
    gates.tried(FAMILY, turn, got_through=True)
    assert not gates.has_parked(FAMILY)


async def test_a_parked_item_its_consumer_kept_steps_aside_at_a_later_park():
    answers = iter([False, True])  # the consumer at max_parked_aside, then with room
    asked: list[bool] = []

    def free() -> bool:
        asked.append(next(answers))
        return asked[-1]

    slot = consumer_slots.Slot(free)
    consumer_slots.hold(slot)
    metrics = Metrics()
    previews = PreviewGate(max_wait=0, metrics=metrics, stage="detector1")
    item = WorkItem(stage="detector1", pipeline="calwebb_detector1", task="t:t", task_kwargs={},
                    program="01234", observation="001", name="jw01234001001_02101_00001_nrcb1",
                    inputs=[])
    parked = ParkedItem(ParkGates(), metrics, item, 0.0, previews)
    with anyio.fail_after(10), previews.calibrating():
        await parked.park("crds_lookup", 0.0, "a reference missing")
        assert not slot.aside
        parked.tried("park")
        await parked.park("crds_lookup", 0.0, "a reference missing")
        assert slot.aside
        parked.tried("park")
        await parked.park("crds_lookup", 0.0, "a reference missing")
        parked.end("publish")
    assert asked == [False, True]  # once aside, the consumer is not asked again


async def test_a_turn_whose_fault_is_as_it_was_runs_nothing():
    """A reference that is still the broken file it was (its stat signature
    unchanged) is not run again at each turn: the turn passes, and the item
    tries once the check says the fault may have cleared."""
    answers = iter([False, False, True])
    asked: list[bool] = []

    def may_have_cleared() -> bool:
        asked.append(next(answers))
        return asked[-1]

    metrics = Metrics()
    previews = PreviewGate(max_wait=0, metrics=metrics, stage="detector1")
    item = WorkItem(stage="detector1", pipeline="calwebb_detector1", task="t:t", task_kwargs={},
                    program="01234", observation="001", name="jw01234001001_02101_00001_nrcb1",
                    inputs=[])
    gates = ParkGates()
    parked = ParkedItem(gates, metrics, item, 0.0, previews)
    with anyio.fail_after(10), previews.calibrating():
        await parked.park("crds_reference_corrupt", 0.0, "a reference cut short",
                          may_have_cleared=may_have_cleared)
        assert asked == [False, False, True]  # returned (to try) only on the third turn
        assert parked.turn is not None  # it probes for its kind
        parked.tried("publish")
        parked.end("publish")
    assert not gates.has_parked((*item.fault_family, "crds_reference_corrupt"))


async def test_an_item_parked_again_on_another_fault_is_shown_on_that_fault(tmp_path):
    """A run parked on a full product store, then (space freed) on a
    reference missing from CRDS: calstream_parked_items kept its first
    cause and directory, and the alert sent the operator to a disk already
    freed."""
    metrics = Metrics()
    previews = PreviewGate(max_wait=0, metrics=metrics, stage="detector1")
    item = WorkItem(stage="detector1", pipeline="calwebb_detector1", task="t:t", task_kwargs={},
                    program="01234", observation="001", name="jw01234001001_02101_00001_nrcb1",
                    inputs=[])
    parked = ParkedItem(ParkGates(), metrics, item, 0.0, previews)

    def shown() -> list[dict[str, str]]:
        return [s.labels for f in metrics.registry.collect() for s in f.samples
                if s.name == "calstream_parked_items" and s.value > 0]

    with anyio.fail_after(10), previews.calibrating():
        await parked.park("disk_full", 0.0, "No space left on device", root=str(tmp_path))
        assert shown() == [{"stage": "detector1", "cause": "disk_full", "root": str(tmp_path)}]
        parked.tried("park")
        await parked.park("crds_reference_missing", 0.0, "a reference missing")
        assert shown() == [{"stage": "detector1", "cause": "crds_reference_missing", "root": ""}]
        parked.tried("publish")
        parked.end("publish")
    assert shown() == []
