"""A stage-2 order refused on its way out, across a takeover of the planner
lease: lettered once, counted once in each planner's state, nothing lost.

Two real Planners, each with its Standby and GatedPublisher as the daemon
wires them (daemon/roles.py), on one producer that stands for the broker's
answers (tests/unit/test_refused_order_failures.py says why). Each decides
the same order from the same events; the refusal is the encoding's or the
broker's, as the order is the same for both.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from calstream.daemon.doers import planner_standby
from calstream.daemon.doers.kafka.publisher import Publisher
from calstream.daemon.doers.planner_leadership import GatedPublisher, PublishGate
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.doers.planner_standby import Standby
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .test_level3_stage2_wait import T0, new_state
from .test_refused_order_failures import (
    FOURTH,
    _as_record,
    _Broker,
    _closed_after_the_quiet_period,
    _fourth_ordered,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_fresh_fetch_wait(monkeypatch):
    monkeypatch.setattr(planner_standby, "FRESH_FETCH_SECONDS", 0.0)  # no reader here to wait on


def _gated(tmp_path, broker: _Broker, name: str) -> Planner:
    cfg = load(None, env={}, flags={"work_dir": tmp_path / name})
    topics, metrics = Topics(), Metrics()
    planner = Planner(cfg, publisher=Publisher(broker, topics, metrics), metrics=metrics,
                      topics=topics)
    planner.standby = Standby(PublishGate(), topics, follow=True)
    planner.publisher = GatedPublisher(planner.publisher, planner.standby.gate,
                                       planner.standby.withhold, cfg)
    planner.caught_up = True
    planner.state = planner.states["live"] = new_state()
    planner.clock = SimpleNamespace(now=lambda: T0 + 5)
    return planner


async def _take_over(planner: Planner) -> None:
    planner.standby.gate.grant()
    at_end = SimpleNamespace(at_end=_always)  # the followed topics read to their end
    await planner.standby.take_over_when_due(planner, at_end)
    assert planner.standby.gate.acting
    await planner._settle()


async def _always(_names) -> bool:
    return True


async def _reads(planner: Planner, topic: str, value: bytes) -> None:
    """A record of a followed topic, as the planner's loop takes it."""
    acting = planner.standby.gate.acting
    await planner._on_records([_as_record(topic, value)],
                              set(planner.standby.output_names(planner)), acting)


def _letters(broker: _Broker) -> list[dict]:
    return [contract.decode(v, expected="dead_letter").body for t, v in broker.sent
            if t == "calstream.deadletter"]


def _decide(planner: Planner, bug: bool) -> list:
    emits = _fourth_ordered(planner)
    if bug:
        emits[0].message.body["pipeline"] = 7  # the same decider in both: the encoding refuses
    return emits


@pytest.mark.parametrize("refused_by", ["encoding", "broker"])
async def test_a_takeover_does_not_letter_again_an_order_the_leader_lettered(
        tmp_path, refused_by):
    """The standby withheld the order and read the leader's letter of its
    refusal; taking over, it sends what it withheld (the order was never
    seen published), refused again: counted by the leader's letter, not
    lettered again. Before session 45 each takeover lettered it once more."""
    broker = _Broker(*(["calstream.work.stage2"] if refused_by == "broker" else []))
    leader, standby = _gated(tmp_path, broker, "leader"), _gated(tmp_path, broker, "standby")
    leader.standby.gate.act(leader.standby.gate.grant())
    bug = refused_by == "encoding"
    await leader._publish(_decide(leader, bug), leader.unacked)
    await leader._settle()
    [letter] = _letters(broker)
    await standby._publish(_decide(standby, bug), standby.unacked)  # withheld
    assert len(standby.standby.withheld) == 1
    await _reads(standby, "calstream.deadletter", broker.sent[-1][1])
    leader.standby.gate.revoke(0)
    await _take_over(standby)
    assert _letters(broker) == [letter]
    assert standby.standby.withheld == {}
    v1 = _closed_after_the_quiet_period(standby)
    assert FOURTH in v1["degraded"] and len(v1["inputs"]) == 3


async def test_a_refusal_answered_after_the_lease_left_is_lettered_once_and_not_lost(tmp_path):
    """The leader sent the order, then lost the lease before the broker's
    refusal came: it counts the failure, its letter withheld. The planner
    that takes over, which never read a letter of it, sends the order it
    withheld, refused too, and letters it; the old leader, standing by,
    reads that letter (the same event id) and forgets its own. One letter,
    each state counts the failure once, nothing withheld for ever."""
    broker = _Broker("calstream.work.stage2")
    leader, standby = _gated(tmp_path, broker, "leader"), _gated(tmp_path, broker, "standby")
    leader.standby.gate.act(leader.standby.gate.grant())
    await leader._publish(_decide(leader, False), leader.unacked)
    leader.standby.gate.revoke(0)  # before the broker answered (its answer not awaited yet)
    await leader._settle()  # the refusal: counted, its letter withheld
    assert _letters(broker) == [] and len(leader.standby.withheld) == 1
    await standby._publish(_decide(standby, False), standby.unacked)  # withheld
    await _take_over(standby)
    [letter] = _letters(broker)
    await _reads(leader, "calstream.deadletter", broker.sent[-1][1])
    assert leader.standby.withheld == {}  # published by the new leader: the same letter
    assert standby.standby.withheld == {}
    for planner in (leader, standby):
        assert len(planner.state.stage3._stage2_failed[FOURTH]) == 1
        v1 = _closed_after_the_quiet_period(planner)
        assert FOURTH in v1["degraded"] and len(v1["inputs"]) == 3
    assert letter["original"]["topic"] == "calstream.work.stage2"
    # Counted where it was sent: a withheld letter is neither counted nor
    # logged as sent (one letter was two in calstream_dead_letters_total).
    counted = [p.metrics.dead_letters.labels(stage="planner", category="invalid_message")
               ._value.get() for p in (leader, standby)]
    assert counted == [0, 1]


async def test_a_standby_restored_from_its_snapshot_still_knows_the_letters_read_before(
        tmp_path):
    """The refusals known from letters read are in the snapshot: a standby
    restarted from its snapshot reads the letters after the snapshot's
    offsets only, and until session 46 took over knowing none of those
    before, and lettered the order it withheld once more."""
    from calstream.daemon.doers import planner_restore

    broker = _Broker("calstream.work.stage2")
    leader, standby = _gated(tmp_path, broker, "leader"), _gated(tmp_path, broker, "standby")
    leader.standby.gate.act(leader.standby.gate.grant())
    await leader._publish(_decide(leader, False), leader.unacked)
    await leader._settle()
    [letter] = _letters(broker)
    await standby._publish(_decide(standby, False), standby.unacked)  # withheld
    await _reads(standby, "calstream.deadletter", broker.sent[-1][1])
    assert await planner_restore.take_snapshot(standby) > 0
    restarted = _gated(tmp_path, broker, "standby")  # the same work directory
    assert planner_restore.load_snapshot(restarted)
    assert len(restarted.standby.withheld) == 1  # the order it withheld, in the snapshot too
    leader.standby.gate.revoke(0)
    await _take_over(restarted)
    assert _letters(broker) == [letter]  # refused again, not lettered again
    assert restarted.standby.withheld == {}


def test_refusals_known_from_letters_survive_a_snapshot_and_an_old_snapshot_has_none():
    from calstream.daemon.deciders.stage2_failures import RefusedOrders, Stage2Failure

    refused = RefusedOrders()
    failure = Stage2Failure("live", "w1", FOURTH, "refused", "L1", ("mark",), "L1")
    refused.letter_read(failure)
    assert RefusedOrders.from_body(refused.to_body()).known("live", "w1", FOURTH) == failure
    assert RefusedOrders.from_body(None).to_body() == []  # a snapshot of before session 46
    forged = [["live", "w2", FOURTH, "r", "L2", [3]], "x", ["live", 1, FOURTH, "r", "L3", []]]
    assert RefusedOrders.from_body(forged).to_body() == []  # what to_body never writes
    capped = RefusedOrders.from_body([["live", f"w{n}", FOURTH, "r", f"L{n}", []]
                                      for n in range(5)], capacity=2)
    assert [e[1] for e in capped.to_body()] == ["w3", "w4"]  # the most recent
