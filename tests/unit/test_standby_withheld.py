"""A standby's withheld decisions go with its state into its snapshot
(deciders/standby_withheld.py, doers/planner_restore.py), so that a standby
restarted from its own snapshot (a compaction, a kill -9) still sends, at a
takeover, every decision nobody published: none lost, none twice."""

from __future__ import annotations

import json

import anyio
import pytest

from calstream.daemon.deciders.planner_records import Emit
from calstream.daemon.deciders.standby_withheld import (
    WithheldDecisions,
    may_snapshot,
    usable_without_following,
)
from calstream.daemon.doers import planner_restore
from calstream.daemon.doers.planner_leadership import PublishGate
from calstream.daemon.doers.planner_standby import Standby
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .planner_stream import comparable, play, steps
from .test_planner_snapshot import _planner


def _emit(n: int, topic: str = "work.stage2") -> Emit:
    body = {"event_id": f"{n:064x}", "work_id": f"w{n}", "stage": "stage2"}
    return Emit(topic, f"key-{n}", contract.Message("work_order", body))


def test_withheld_decisions_and_published_ids_come_back_from_a_snapshot_as_they_were():
    memory = WithheldDecisions()
    for n in (1, 2, 3):
        memory.withhold(_emit(n))
    memory.seen_published(_emit(2).message.event_id)
    memory.seen_published(_emit(9).message.event_id)  # before this standby decided it
    memory.withhold(_emit(9))  # ... so never withheld
    back = WithheldDecisions.from_body(json.loads(json.dumps(memory.to_body())))
    assert list(back.pending) == [_emit(1).message.event_id, _emit(3).message.event_id]
    assert back.pending[_emit(3).message.event_id] == _emit(3)
    assert list(back.published) == list(memory.published)
    back.withhold(_emit(9))
    assert len(back.pending) == 2
    assert [e.key for e in back.take_all()] == ["key-1", "key-3"] and not back.pending
    # Acting now: nothing more is withheld, so its snapshots carry no ids.
    assert back.to_body() == {"withheld": [], "published": []}
    # The most recent ids are kept when a snapshot holds more than the capacity.
    assert list(WithheldDecisions.from_body(memory.to_body(), capacity=1).published) == \
        [_emit(9).message.event_id]
    assert not WithheldDecisions.from_body(None).pending  # an active planner's snapshot


@pytest.mark.parametrize("part", [
    [], {"withheld": []}, {"withheld": {}, "published": []}, {"withheld": [], "published": [1]},
    {"withheld": [["work.stage2", "k", "work_order"]], "published": []},
    {"withheld": [["work.stage2", "k", "work_order", {"no": "event id"}]], "published": []},
    {"withheld": [["work.stage2", 3, "work_order", {"event_id": "e"}]], "published": []},
])
def test_a_standby_part_of_another_shape_is_refused(part):
    with pytest.raises(ValueError):
        WithheldDecisions.from_body(part)


def test_a_planner_snapshots_when_active_or_standing_by_but_not_while_taking_over():
    assert may_snapshot("active") and may_snapshot("standby")
    assert not may_snapshot("taking over")
    gate = PublishGate()
    planner = _Looping(Standby(gate, Topics("t."), follow=True))
    assert planner_restore.snapshot_due(planner)  # standing by
    generation = gate.grant()
    assert not planner_restore.snapshot_due(planner)  # taking over
    gate.act(generation)
    assert planner_restore.snapshot_due(planner)  # active


class _Looping:
    """What snapshot_due reads of a planner: caught up, one record after a rebuild."""

    def __init__(self, standby):
        self.standby, self.caught_up, self.restored_from = standby, True, None
        self.last_snapshot, self.records_seen = (0.0, 0), 1
        self.snapshot_parking = type("NotParked", (), {"failures": 0})()
        self.memory_budget = None


def test_only_a_snapshot_with_nothing_withheld_serves_a_planner_that_follows_no_other():
    assert usable_without_following(None)
    assert usable_without_following({"withheld": [], "published": ["e"]})
    assert not usable_without_following({"withheld": [["work.stage2", "k", "t", {}]],
                                         "published": []})


def _standby_planner(tmp_path, *, follow: bool = True):
    planner = _planner(tmp_path)
    planner.standby = Standby(PublishGate(), Topics(), follow=follow)
    return planner


def test_a_standby_restarted_from_its_snapshot_withholds_what_it_had_withheld(tmp_path):
    """A standby decides the first half of a program, the active planner
    publishes none of it (it died), the standby snapshots and is killed; its
    restart from that snapshot decides the rest. At its takeover it must send
    every decision of the whole program exactly once."""
    stream = steps()
    whole = play(_planner(tmp_path / "whole").state, stream)
    cut = len(stream) // 2
    first = _standby_planner(tmp_path)
    for e in play(first.state, stream[:cut]):  # as GatedPublisher does while standing by
        first.standby.withhold(e.topic, e.key, e.message)
    assert first.standby.withheld  # the test means something: decisions are withheld
    first.positions = {("calstream.products", 0): cut}
    anyio.run(planner_restore.take_snapshot, first)

    second = _standby_planner(tmp_path)  # a new process: nothing in memory
    assert planner_restore.load_snapshot(second)
    for e in play(second.state, stream[cut:]):
        second.standby.withhold(e.topic, e.key, e.message)
    sent_at_takeover = second.standby.memory.take_all()
    assert sorted(comparable(sent_at_takeover)) == sorted(comparable(whole))


def test_one_planner_rebuilds_rather_than_start_from_a_standbys_withheld_decisions(tmp_path):
    stream = steps()
    first = _standby_planner(tmp_path)
    for e in play(first.state, stream):
        first.standby.withhold(e.topic, e.key, e.message)
    anyio.run(planner_restore.take_snapshot, first)
    assert not planner_restore.load_snapshot(_standby_planner(tmp_path, follow=False))
    assert planner_restore.load_snapshot(_standby_planner(tmp_path))
