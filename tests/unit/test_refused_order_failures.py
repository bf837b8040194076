"""A stage-2 order refused on its way out counts as that order's failure at
once, however it was refused (planner_publishing.refused_order, one
mechanism): its stage-3 candidates stop waiting for it after the quiet
period, not stage3_stage2_wait.

Before session 45 it counted only when its letter was read back: an order
the *encoding* refused (a decider's bug) was lettered as its product
event's fault, and an order whose letter the dead-letter topic refused too
was never read back; either way its candidates waited the whole
stage3_stage2_wait (6 h by default) for a product that could not come.

A real Planner and Publisher; the producer stands for the broker's answers
(tansu honours no max.message.bytes: tests/integration/test_refused_records.py).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from calstream.daemon.doers.kafka.publisher import Publisher
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.doers.planner_publishing import refused_order
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .test_level3_stage2_wait import QUIET, T0, WAIT, dither, feed, new_state, rate, stage3

pytestmark = pytest.mark.anyio
FOURTH = "jw01234001001_02101_00004_nrcb1"


@pytest.fixture
def anyio_backend():
    return "asyncio"


class _Broker:
    """A producer whose broker takes every record, except on the topics in
    ``refusing``: those it answers MESSAGE_TOO_LARGE (a topic's
    max.message.bytes below the record)."""

    def __init__(self, *refusing: str):
        self.refusing = set(refusing)
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic, value=None, key=None, **_):
        answer = asyncio.get_running_loop().create_future()
        if topic in self.refusing:
            answer.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((topic, value))
            answer.set_result(SimpleNamespace(topic=topic, partition=0,
                                              offset=len(self.sent) - 1))
        return answer


def _planner(tmp_path, broker: _Broker) -> Planner:
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work"})
    topics, metrics = Topics(), Metrics()
    planner = Planner(cfg, publisher=Publisher(broker, topics, metrics), metrics=metrics,
                      topics=topics)
    planner.caught_up = True
    planner.state = planner.states["live"] = new_state()  # the tests' quiet period and wait
    planner.clock = SimpleNamespace(now=lambda: T0 + 5)
    return planner


def _fourth_ordered(planner: Planner) -> list:
    """Dithers 1-3 calibrated; dither 4 arrived, its stage-2 order decided."""
    for n in (1, 2, 3):
        feed(planner.state, dither(n), T0 + n)
    emits = planner.state.observe(rate(dither(4), T0 + 4), T0 + 4)
    assert [e.topic for e in emits] == ["work.stage2"]
    return emits


async def _send(planner: Planner, emits: list) -> None:
    """As the planner loop sends a record's emits, then settles the fetch."""
    assert await planner._publish(emits, planner.unacked) == []  # no record is blamed
    await planner._settle()


def _closed_after_the_quiet_period(planner: Planner) -> dict:
    [v1] = stage3(planner.state.tick(T0 + 5 + QUIET))  # not T0 + 4 + WAIT
    assert QUIET < WAIT
    return v1


async def test_a_stage2_order_the_encoding_refuses_counts_as_its_failure(tmp_path):
    broker = _Broker()
    planner = _planner(tmp_path, broker)
    emits = _fourth_ordered(planner)
    emits[0].message.body["pipeline"] = 7  # a decider's bug: its schema refuses it
    await _send(planner, emits)
    [(topic, letter)] = broker.sent
    letter = contract.decode(letter, expected="dead_letter")
    # Its own letter, the order as original (not the product event's fault).
    assert topic == "calstream.deadletter" and letter["stage"] == "planner"
    assert letter["original"]["topic"] == "calstream.work.stage2"
    assert letter["order"]["product_name"] == FOURTH
    v1 = _closed_after_the_quiet_period(planner)
    assert FOURTH in v1["degraded"] and len(v1["inputs"]) == 3


@pytest.mark.parametrize("value", [b"bytes", {"a", "set"}, object()],
                         ids=["bytes", "set", "object"])
async def test_an_order_holding_a_value_json_has_no_text_for_is_refused_not_raised(
        tmp_path, value):
    """A decider's bug that puts a value JSON cannot write into an order
    (bytes, a set, any object): the fast validator raised a bare ValueError
    ("Unsupported type") that no sender catches, and the planner's task
    ended, to decide and raise the same again after each restart. Refused
    as any order the encoding refuses: lettered, counted as its failure."""
    broker = _Broker()
    planner = _planner(tmp_path, broker)
    emits = _fourth_ordered(planner)
    emits[0].message.body["pipeline"] = value
    await _send(planner, emits)
    [(topic, letter)] = broker.sent
    assert topic == "calstream.deadletter"
    assert "cannot be sent" in contract.decode(letter, expected="dead_letter")["reason"]
    v1 = _closed_after_the_quiet_period(planner)
    assert FOURTH in v1["degraded"]


async def test_a_refused_order_whose_letter_is_refused_too_still_counts(tmp_path):
    broker = _Broker("calstream.work.stage2", "calstream.deadletter")
    planner = _planner(tmp_path, broker)
    await _send(planner, _fourth_ordered(planner))
    assert broker.sent == []  # neither the order nor its letter went
    refused = planner.metrics.records_refused
    assert refused.labels(topic="deadletter", code="MESSAGE_TOO_LARGE")._value.get() == 1
    v1 = _closed_after_the_quiet_period(planner)
    assert FOURTH in v1["degraded"] and len(v1["inputs"]) == 3


async def test_a_refused_order_s_letter_read_back_is_the_same_failure_not_a_second(tmp_path):
    broker = _Broker("calstream.work.stage2")
    planner = _planner(tmp_path, broker)
    await _send(planner, _fourth_ordered(planner))
    [(topic, letter)] = broker.sent
    record = SimpleNamespace(topic=topic, partition=0, offset=0, value=letter, key=None,
                             headers=(), timestamp=None)
    assert planner._stage2_failure(record) == []  # counted already: nothing decided again
    assert len(planner.state.stage3._stage2_failed[FOURTH]) == 1



def _as_record(topic: str, value: bytes) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=0, offset=0, value=value, key=None,
                           headers=(), timestamp=None)


def _rebuilt_reads(tmp_path, topic: str, letter: bytes) -> None:
    """A rebuild (no snapshot) decides the order again from the same events,
    then reads its letter: the failure is known from the letter alone."""
    rebuilt = _planner(tmp_path / "rebuilt", _Broker())
    _fourth_ordered(rebuilt)
    rebuilt._stage2_failure(_as_record(topic, letter))
    v1 = _closed_after_the_quiet_period(rebuilt)
    assert FOURTH in v1["degraded"] and len(v1["inputs"]) == 3


async def test_an_order_the_schema_refused_reads_back_from_its_letter(tmp_path):
    """Its original is no order the contract reads back (the schema refuses
    it again): the identity the letter keeps names it. Before session 45 the
    letter was ignored, and a rebuild's candidates waited stage3_stage2_wait."""
    broker = _Broker()
    first = _planner(tmp_path / "first", broker)
    emits = _fourth_ordered(first)
    emits[0].message.body["pipeline"] = 7
    await _send(first, emits)
    [(topic, letter)] = broker.sent
    _rebuilt_reads(tmp_path, topic, letter)


async def test_an_order_json_cannot_write_reads_back_from_its_letter(tmp_path):
    """The letter's original is the body's ``str`` (planner_publishing's
    refused_order for a body JSON has no text for): read back all the same."""
    broker = _Broker()
    first = _planner(tmp_path / "first", broker)
    [order] = _fourth_ordered(first)
    order.message.body["pipeline"] = b"no JSON text"
    await refused_order(first.publisher, order, "work.stage2",
                        contract.InvalidMessage("the encoding's"))
    [(topic, letter)] = broker.sent
    assert contract.decode(letter, expected="dead_letter")["original"]["value"].startswith("{'")
    _rebuilt_reads(tmp_path, topic, letter)


@pytest.mark.parametrize("letter_first", [False, True], ids=["decided-first", "letter-first"])
async def test_a_rebuild_does_not_letter_again_an_order_refused_again(tmp_path, letter_first):
    """A rebuild (no snapshot) decides again the order the encoding refused
    (it was never on its topic), holds it while catching up and sends it
    once caught up: refused again (the same decider), it is not lettered
    again, as its letter is on the topic already, read in the rebuild (before
    or after the order was decided: the topics are read side by side). Its
    failure is counted all the same. Before session 45 every restart that
    rebuilt lettered it again (one more record, dead letter and log line)."""
    broker = _Broker()
    first = _planner(tmp_path / "first", broker)
    emits = _fourth_ordered(first)
    emits[0].message.body["pipeline"] = 7
    await _send(first, emits)
    [(topic, letter)] = broker.sent
    again = _Broker()
    rebuilt = _planner(tmp_path / "rebuilt", again)
    rebuilt.caught_up = False
    if letter_first:
        await rebuilt._on_dead_letter(_as_record(topic, letter))
    emits = _fourth_ordered(rebuilt)
    emits[0].message.body["pipeline"] = 7  # the same decider, the same bug
    await rebuilt._send(_as_record("calstream.products", b"{}"), emits)
    if not letter_first:
        await rebuilt._on_dead_letter(_as_record(topic, letter))
    # Caught up, as the planner's loop is (Planner.run): what it held, sent.
    rebuilt.caught_up = True
    await rebuilt._publish_unrecorded(rebuilt.held_orders.take(), rebuilt.unacked)
    await rebuilt._settle()
    assert again.sent == []  # refused again, not lettered again
    v1 = _closed_after_the_quiet_period(rebuilt)
    assert FOURTH in v1["degraded"] and len(v1["inputs"]) == 3
