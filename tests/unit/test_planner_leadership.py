"""The planner lease's gate and a standby's memory, without a broker."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from calstream.daemon.doers.kafka.lease import LeaseTiming
from calstream.daemon.doers.planner_leadership import PublishGate
from calstream.daemon.doers.planner_standby import Standby
from calstream.daemon.operations.config import ConfigError, load
from calstream.topics import contract
from calstream.topics.catalog import Topics


def order(work_id: str) -> contract.Message:
    return contract.Message("work_order", {"event_id": contract.event_id("work_order", work_id),
                                           "work_id": work_id, "stage": "stage2",
                                           "product_name": "jw01234001001_02101_00001_nrcb1"})


def test_a_planner_publishes_only_after_taking_over_its_grant():
    gate = PublishGate()
    assert not gate.enter() and gate.role() == "standby"
    generation = gate.grant()
    assert gate.takeover_due() == generation and not gate.enter()
    assert gate.role() == "taking over"
    assert gate.act(generation) and gate.enter() and gate.role() == "active"
    gate.leave()
    assert gate.takeover_due() is None


def test_losing_the_lease_closes_the_gate_at_once_and_waits_for_the_send_in_flight():
    gate = PublishGate()
    gate.act(gate.grant())
    assert gate.enter()  # a publication in flight
    finished = []

    def revoke():
        finished.append(gate.revoke(wait=30))

    t = threading.Thread(target=revoke)
    t.start()
    while gate.held:
        time.sleep(0.01)
    assert not gate.enter(), "nothing new begins once the lease is lost"
    assert not finished, "revoke returns only when the publication is acknowledged"
    gate.leave()
    t.join()
    assert finished == [True]


def test_a_grant_that_moved_on_cannot_be_acted_on():
    gate = PublishGate()
    first = gate.grant()
    gate.revoke(wait=0)
    second = gate.grant()
    assert not gate.act(first)
    assert gate.act(second) and gate.acting


def _dead_letter(topics: Topics, event_id: str):
    """A record of the deadletter topic as the active planner published it."""
    body = f'{{"event_id": "{event_id}", "schema": "calstream.dead_letter"}}'.encode()
    return SimpleNamespace(topic=topics.name("deadletter"), partition=0, offset=7, value=body)


def test_a_standby_forgets_what_the_active_planner_published_and_keeps_the_rest():
    topics = Topics("t.")
    standby = Standby(PublishGate(), topics, follow=True)
    planner = SimpleNamespace(positions={})  # dead letters teach the state nothing
    mine, theirs, later = order("a" * 64), order("b" * 64), order("c" * 64)
    for m in (mine, theirs):
        standby.withhold("deadletter", "k", m)
    standby.observe_output(planner, SimpleNamespace(topic=topics.name("deadletter"),
                                                    partition=0, offset=3, value=b"not json"))
    assert list(standby.withheld) == [mine.event_id, theirs.event_id]
    standby.observe_output(planner, _dead_letter(topics, theirs.event_id))
    assert list(standby.withheld) == [mine.event_id]
    # Published before this standby decided it: never withheld at all.
    standby.observe_output(planner, _dead_letter(topics, later.event_id))
    standby.withhold("deadletter", "k", later)
    assert list(standby.withheld) == [mine.event_id]
    assert standby.describe() == {"withheld": 1}
    # Read up to there: a snapshot's offsets say so (its restart reads on from them).
    assert planner.positions == {(topics.name("deadletter"), 0): 8}


def test_one_planner_follows_nothing():
    assert Standby(PublishGate(), Topics("t."), follow=False).output_names(None) == []


def test_lease_timing_follows_the_setting():
    assert LeaseTiming.of(load(None, env={}, flags={"fast_group_timing": True})) == \
        LeaseTiming(2000, 285, 1000)
    assert LeaseTiming.of(load(None, env={})).session_timeout_ms == 10000
    cfg = load(None, env={"CALSTREAM_PLANNER_LEASE": "true",
                          "CALSTREAM_PLANNER_LEASE_TIMEOUT": "30"})
    assert cfg.planner_lease and LeaseTiming.of(cfg).session_timeout_ms == 30000
    with pytest.raises(ConfigError):
        load(None, env={"CALSTREAM_PLANNER_LEASE_TIMEOUT": "0"})


def test_the_lease_stays_with_its_holder_when_a_planner_joins():
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata as Meta

    from calstream.daemon.doers.kafka.lease import CLAIM, StickyLeaseAssignor

    assignor = StickyLeaseAssignor(SimpleNamespace(claims=False))
    members = {"a-new": Meta(0, ["t.planner.lease"], b""),
               "z-holder": Meta(0, ["t.planner.lease"], CLAIM)}
    got = assignor.assign(None, members)
    assert [tuple(x) for x in got["z-holder"].assignment] == \
        [("t.planner.lease", [0])]
    assert got["a-new"].assignment == []
    # Nobody held it (the holder died): the smallest member id gets it.
    members["z-holder"] = Meta(0, ["t.planner.lease"], b"")
    assert assignor.assign(None, members)["a-new"].assignment
    assert assignor.metadata(["t.planner.lease"]).user_data == b""


def test_status_shows_the_active_planners_view_and_names_the_standby():
    from calstream.daemon.operations.status_render import _planner_roles
    from calstream.daemon.operations.status_summary import Endpoint, summarise_planner

    standby = Endpoint("b", planner={"caught_up": True, "leadership": {"role": "standby"}})
    active = Endpoint("a", planner={"caught_up": True, "leadership": {"role": "active"},
                                    "plans": []})
    out = summarise_planner([standby, active])
    assert out["view"] is active.planner and out["roles"] == ["active", "standby"]
    assert _planner_roles(out["roles"]) == ["  planners: active, standby"]
    assert "expected exactly one" in _planner_roles(["standby", "standby"])[0]
    assert _planner_roles(["active"]) == []  # one planner, nothing to say


def test_a_lease_unconfirmed_past_its_bound_publishes_nothing_until_confirmed(monkeypatch):
    """A planner frozen past its session (SIGSTOP, a VM paused) was expelled,
    and nothing has told it yet: it must not send what it reads on resuming."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    pauses = []
    gate = PublishGate(bound=2.0, on_pause=lambda: pauses.append(now[0]))
    generation = gate.grant()
    assert gate.act(generation) and gate.enter()
    gate.leave()
    now[0] += 1.5
    gate.confirm(now[0] - 0.1)  # a heartbeat answered: vouched for from when it was sent
    now[0] += 1.5
    assert gate.enter() and gate.acting
    gate.leave()
    assert not pauses and not gate.resuming(generation)
    now[0] += 10.0  # frozen: no heartbeat for five bounds
    assert not gate.enter() and not gate.acting
    assert gate.role() == "paused" and gate.takeover_due() == generation
    assert len(pauses) == 1, "one pause counted, however often it is asked"
    assert not gate.act(generation), "not acting again before a heartbeat confirms the lease"
    gate.confirm(now[0] - 12.0)  # the answer to a heartbeat sent before the freeze: too old
    assert not gate.act(generation)
    gate.confirm(now[0])
    assert gate.act(generation) and gate.enter()  # after the takeover's read of what was sent
    gate.leave()
    assert gate.resuming(generation) and gate.role() == "active" and len(pauses) == 1
    # Lost, then granted again: a new leadership, whatever paused before.
    gate.revoke(wait=0)
    assert not gate.resuming(generation)
    later = gate.grant()
    assert gate.role() == "taking over" and not gate.resuming(later)


def test_a_standby_says_whether_it_resumed_its_own_lease_or_took_over_another_s(
        caplog, monkeypatch):
    """After a pause the lease never left this planner: its log must not
    claim a new leadership nor blame a previous leader."""
    import anyio

    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    gate = PublishGate(bound=2.0)
    standby = Standby(gate, Topics("t."), follow=True)
    published = []

    async def publish(pending):
        published.append(list(pending))

    class AtEnd:
        async def at_end(self, names):
            return True

    planner = SimpleNamespace(_publish=publish, _work_topics=lambda: ["work.stage2"])

    def turn():
        anyio.run(lambda: standby.take_over_when_due(planner, AtEnd()))

    with caplog.at_level("WARNING", logger="calstream.planner"):
        turn()  # nothing granted: nothing happens
        generation = gate.grant()
        turn()
        now[0] += 1.6  # the takeover's fresh fetch
        gate.confirm(now[0])
        turn()
        assert gate.acting and "now the active planner (generation 1)" in caplog.text
        caplog.clear()
        now[0] += 10.0
        assert not gate.acting  # paused
        standby.withhold("deadletter", "k", order("d" * 64))
        gate.confirm(now[0])
        turn()
        now[0] += 1.6
        gate.confirm(now[0])
        turn()
    assert gate.acting and gate.generation == generation and len(published[-1]) == 1
    said = caplog.text
    assert "publishing resumed (generation 1)" in said and "1 decision(s) withheld" in said
    assert "previous leader" not in said and "now the active planner" not in said


def test_the_only_planner_s_gate_never_goes_stale(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    gate = PublishGate()  # no lease group: nothing ever confirms, nothing needs to
    gate.act(gate.grant())
    now[0] += 1e6
    assert gate.enter() and gate.acting
    gate.leave()


def test_status_counts_the_holds_of_the_lease_holder_only():
    """A planner that lost the lease keeps its last gauges: summed with the
    new leader's, every exposure held before the takeover counted twice."""
    from calstream.daemon.operations.status_summary import Endpoint, summarise_planner

    def planner(url: str, leader: int, held: int, age: float) -> Endpoint:
        return Endpoint(url, samples=[
            ("calstream_planner_leader", {"group": "calstream.planner"}, float(leader)),
            ("calstream_held_exposures", {}, float(held)),
            ("calstream_oldest_hold_age_seconds", {}, age),
            ("calstream_open_associations", {"stage": "stage3"}, 4.0)])

    demoted, leader = planner("a", 0, 3, 9000.0), planner("b", 1, 3, 60.0)
    out = summarise_planner([demoted, leader])
    assert out["held"] == 3 and out["oldest_hold_age_seconds"] == 60.0
    assert out["open_associations"] == {"stage3": 4}
    # No lease anywhere (one planner without it, or an older daemon): all count.
    alone = Endpoint("c", samples=[("calstream_held_exposures", {}, 2.0)])
    assert summarise_planner([alone])["held"] == 2
