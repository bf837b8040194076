"""What a broker's "no" to a record says: this record, this principal, or the broker (pure).

A send the broker does not take is one of three faults, told apart by the
Kafka error code of its answer (aiokafka raises a class per code, each with
its ``errno``; the producer's own check of a record's size raises the same
code 10 the broker would):

* **the record**: too large for the topic (``max.message.bytes`` below
  calstream's own limit), refused by a topic policy, corrupt, a timestamp
  out of range. Sent again it is refused again: a data fault, never retried;
  the sender dead-letters the work it came from and goes on
  (doers/kafka/publisher.py ``RecordRefused``).
* **the principal**: not authorised to write the topic (an ACL missing).
  Every record to that topic is refused alike, and none of them is at fault:
  the operator's configuration is. Parked, labelled ``topic_not_authorized``
  (``calstream_parked_items``), tried again until an admin grants it, then it
  goes on by itself. Dead letters would have needed a redrive each.
* **the broker**: no answer in time, no leader, no metadata (aiokafka marks
  them ``retriable``), or an answer it gives no reason for (code -1,
  UNKNOWN_SERVER_ERROR; aiokafka 0.14 also maps INVALID_RECORD, code 87,
  which it does not know, to it): parked and retried, as an outage.

Without this, each of the first two was "not the broker's fault" and so, to
a stage's consumer, a handler that raised: retried for ever, parked
``unknown``; to the planner, an error that ended its task.
"""

from __future__ import annotations

# Kafka's error codes that refuse one record for what it is: its name, and why.
RECORD_REFUSED: dict[int, tuple[str, str]] = {
    2: ("CORRUPT_MESSAGE", "the broker found it corrupt"),
    10: ("MESSAGE_TOO_LARGE", "it is larger than the topic takes (the topic's "
         "max.message.bytes, the broker's message.max.bytes or the producer's "
         "max.request.size)"),
    18: ("RECORD_LIST_TOO_LARGE", "its batch is larger than the topic's segment"),
    32: ("INVALID_TIMESTAMP", "its timestamp is out of the range the topic takes"),
    43: ("UNSUPPORTED_FOR_MESSAGE_FORMAT", "the topic's message format does not take it"),
    44: ("POLICY_VIOLATION", "a policy of the broker refuses it"),
    87: ("INVALID_RECORD", "the broker found it invalid"),
}

TOPIC_NOT_AUTHORIZED = "topic_not_authorized"
# The watcher's arrival refused for what it is: the encoding took it (within
# calstream's own limit), so the topic's settings refuse it, not the file;
# the file waits in the inbox, parked (doers/inbox/announcer.py).
TOPIC_REFUSES_RECORD = "topic_refuses_record"
BROKER_ERROR = "broker_error"
_DENIED = 29  # TOPIC_AUTHORIZATION_FAILED
_UNKNOWN_SERVER_ERROR = -1


def error_code(exc: BaseException) -> int | None:
    """The Kafka error code ``exc`` carries (aiokafka's ``errno``), or None.
    An OSError's errno is the system's (2 is ENOENT, not CORRUPT_MESSAGE)."""
    if isinstance(exc, OSError):
        return None
    code = getattr(exc, "errno", None)
    return code if type(code) is int else None


def record_refusal(exc: BaseException) -> tuple[str, str] | None:
    """(the error's name, why) when the broker (or the producer's own size
    check) refused the record sent for what the record is; None if ``exc``
    says nothing about the record."""
    code = error_code(exc)
    return RECORD_REFUSED.get(code) if code is not None else None


def standing_refusal(exc: BaseException) -> str | None:
    """The cause to park on when ``exc`` refuses every record alike and
    something outside the record must change: ``topic_not_authorized`` (an
    ACL), ``broker_error`` (a broker's answer without a reason). None for the
    rest: a record's fault, or one the caller judges (a time-out)."""
    code = error_code(exc)
    if code == _DENIED:
        return TOPIC_NOT_AUTHORIZED
    if code == _UNKNOWN_SERVER_ERROR:
        return BROKER_ERROR
    return None
