"""What a broker's "no" to a record says (deciders/broker_refusals.py): this
record (a dead letter, never sent again), this principal (parked
``topic_not_authorized`` until an ACL is granted) or the broker (parked as an
outage). Before, the first two were "not the broker's": a stage's consumer
retried the record for ever, parked ``unknown``, and the planner's task
ended. aiokafka's own exception classes, raised as its sender raises them."""

from __future__ import annotations

import asyncio
import errno

import pytest
from aiokafka import errors as kafka_errors

from calstream.daemon.deciders import broker_refusals
from calstream.daemon.deciders.planner_records import Emit
from calstream.daemon.doers.kafka.concurrent_consumer import fault_cause
from calstream.daemon.doers.kafka.publisher import Publisher, RecordRefused, broker_fault
from calstream.daemon.doers.planner_publishing import Unacknowledged, settle
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics
from tests.recording_bus import RecordingBus

RECORD_FAULTS = [
    kafka_errors.MessageSizeTooLargeError,  # the topic's max.message.bytes, or the producer's
    kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTimestampError,
    kafka_errors.PolicyViolationError,
    kafka_errors.UnsupportedForMessageFormatError,
]
BROKER_FAULTS = [
    kafka_errors.RequestTimedOutError, kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError, kafka_errors.UnknownTopicOrPartitionError,
    kafka_errors.NotEnoughReplicasError, kafka_errors.KafkaTimeoutError,
    kafka_errors.KafkaConnectionError, kafka_errors.NodeNotReadyError,
]


@pytest.mark.parametrize("error", RECORD_FAULTS)
def test_a_record_refused_for_what_it_is_is_no_fault_of_the_broker_s(error):
    exc = error()
    assert broker_refusals.record_refusal(exc) is not None
    assert broker_fault(exc) is None and fault_cause(exc) is None  # never parked, never retried


@pytest.mark.parametrize("error", BROKER_FAULTS)
def test_a_broker_that_does_not_answer_is_no_fault_of_the_record_s(error):
    exc = error()
    assert broker_refusals.record_refusal(exc) is None
    assert broker_fault(exc) == "broker_unreachable"


def test_a_topic_this_principal_may_not_write_parks_labelled_until_it_is_granted():
    """Every record to the topic is refused alike and none is at fault: an
    ACL is missing. Parked and named, not ``unknown``; not dead-lettered."""
    for exc in (kafka_errors.TopicAuthorizationFailedError({"p.products"}),
                kafka_errors.TopicAuthorizationFailedError(
                    "role stage2 is not granted writes to work.stage2")):  # the publisher's own
        assert broker_refusals.record_refusal(exc) is None
        assert broker_fault(exc) == fault_cause(exc) == "topic_not_authorized"


def test_a_broker_s_error_without_a_reason_parks_as_the_broker_s():
    """UNKNOWN_SERVER_ERROR, and INVALID_RECORD, which aiokafka 0.14 does not
    know and raises as UnknownError: not the record's to tell."""
    exc = kafka_errors.for_code(87)()
    assert type(exc) is kafka_errors.UnknownError
    assert broker_refusals.record_refusal(exc) is None
    assert broker_fault(exc) == "broker_error"


def test_a_system_error_number_is_no_kafka_error_code():
    """ENOENT is 2, ENOSPC 28: a disk's fault is no CORRUPT_MESSAGE."""
    for number in (errno.ENOENT, errno.ECHILD, errno.ENOSPC):
        exc = OSError(number, "a disk's")
        assert broker_refusals.record_refusal(exc) is None
        assert broker_refusals.standing_refusal(exc) is None


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _failed_answer(publisher: Publisher, exc: BaseException) -> asyncio.Future:
    """The broker's answer to one record as aiokafka's sender gives it
    (``batch.failure``), named by the publisher as ``send`` hands it over."""
    raw = asyncio.get_running_loop().create_future()
    named = publisher._answer_named(raw, "work.stage2", "jw01234001001_02101_00001_nrcb1")
    raw.set_exception(exc)
    return named


@pytest.mark.anyio
async def test_an_answer_refusing_the_record_is_an_invalid_message_counted():
    metrics = Metrics()
    publisher = Publisher(None, Topics("p."), metrics)
    with pytest.raises(contract.InvalidMessage, match="MESSAGE_TOO_LARGE") as raised:
        await _failed_answer(publisher, kafka_errors.MessageSizeTooLargeError())
    assert isinstance(raised.value, RecordRefused)
    assert metrics.records_refused.labels(topic="work.stage2",
                                          code="MESSAGE_TOO_LARGE")._value.get() == 1
    with pytest.raises(kafka_errors.RequestTimedOutError):  # the broker's: as aiokafka raised it
        await _failed_answer(publisher, kafka_errors.RequestTimedOutError())


@pytest.mark.anyio
async def test_a_work_order_the_broker_refuses_is_a_dead_letter_and_the_planner_goes_on():
    """The planner's orders go out unacknowledged and are awaited together
    (``settle``). One refused raised out of it: the planner's task ended,
    and the restart decided and sent the same order again."""
    publisher, bus = Publisher(None, Topics("p."), Metrics()), RecordingBus()
    unacked = Unacknowledged()
    order = contract.Message("work_order", {"event_id": "order-1", "type": "work_order",
                                            "exposure_id": "jw01234001001_02101_00001_nrcb1"})
    unacked.sent.append((Emit("work.stage2", "jw01234001001_02101_00001_nrcb1", order),
                         "work.stage2",
                         _failed_answer(publisher, kafka_errors.PolicyViolationError())))
    unacked.positions[("p.products", 0)] = 8
    assert await settle(unacked, publisher=bus, metrics=Metrics()) == {("p.products", 0): 8}
    [(topic, category, reason)] = bus.sent
    assert (topic, category) == ("deadletter", "invalid_message")
    assert "POLICY_VIOLATION" in reason and "cannot be sent" in reason


class _Keeping:
    """A producer that keeps what it is given and answers at once: where a
    dead letter went, and its bytes, as the broker would have them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic, value=None, key=None, **_):
        from types import SimpleNamespace
        self.sent.append((topic, value))
        answer = asyncio.get_running_loop().create_future()
        answer.set_result(SimpleNamespace(topic=topic, partition=0, offset=len(self.sent) - 1))
        return answer


@pytest.mark.anyio
async def test_a_stage2_order_the_broker_refuses_counts_as_that_order_s_failure():
    """The planner took the order as in flight (its state counts it sent
    when decided) and its letter carried no original: read back, it was no
    stage-2 failure, and the order's stage-3 candidates waited
    stage3_stage2_wait (6 h) for a product that could not come. Now the
    letter names the order, and the planner's own reading of it
    (deciders/stage2_failures.py) counts it, as a stage's letter."""
    from calstream.daemon.deciders.stage2_failures import stage2_failure
    from tests.unit.planner_stream import new_state, play, steps

    state = new_state()
    order = next(e for e in play(state, steps()) if e.topic == "work.stage2")
    producer = _Keeping()
    publisher = Publisher(producer, Topics("p."), Metrics())
    unacked = Unacknowledged()
    unacked.sent.append((order, "work.stage2",
                         _failed_answer(publisher, kafka_errors.MessageSizeTooLargeError())))
    await settle(unacked, publisher=publisher, metrics=Metrics())
    [(topic, letter)] = producer.sent
    assert topic == "p.deadletter"
    failure = stage2_failure(letter, {"p.work.stage2", "p.work.stage2.replay"})
    assert failure is not None, contract.decode(letter).body
    assert (failure.work_id, failure.exposure_id) == (order.message["work_id"],
                                                      order.message["product_name"])
    assert state.ordered[failure.work_id] == failure.exposure_id  # one it sent: counted
    assert "the broker refused the record" in failure.reason
