"""The message contract: building, validating and (de)serialising messages.

Every message is a JSON object carrying ``schema`` (``calstream.<type>``),
``schema_version`` (``MAJOR.MINOR``), a deterministic ``event_id`` and
``emitted_at``. Readers accept any minor version of the major they know:
minor versions only add optional fields (see docs/contract.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import jsonschema_rs
import orjson

from calstream.topics.canonical_json import canonical_json, compact_json
from calstream.topics.schema_patterns import pattern_keyword
from calstream.topics.times import check_date_time
from calstream.topics.times import iso as iso  # the contract's times, where callers find them
from calstream.topics.times import parse_time as parse_time
from calstream.topics.times import utc_now as utc_now

SCHEMA_MAJOR = 1
# 1.1: optional fields for stage 3 and replay; 1.2: the product's previews,
# name grammars and bounded dead-letter originals; 1.3: dark and guider
# products, and the step parameters in effect in the product and the work
# order (docs/contract.md, "Versions"); 1.4: holds of WFSS grisms waiting
# for their direct image (the hold's `waiting_for`).
SCHEMA_MINOR = 4
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"
MESSAGE_TYPES = ("arrival", "product", "work_order", "hold", "pointing_update", "dead_letter",
                 "plan", "promotion")


class InvalidMessage(ValueError):
    """A message that does not follow the contract; the reason says why."""


@dataclass(frozen=True, slots=True)  # slots: one per record read, and read often
class Message:
    type: str
    body: dict[str, Any]

    @property
    def event_id(self) -> str:
        return self.body["event_id"]

    def __getitem__(self, key: str) -> Any:
        return self.body[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default)


def event_id(kind: str, *identity: Any) -> str:
    """A deterministic id: the same identity always gives the same id.

    The identity is what makes two events "the same" for a subscriber, e.g. an
    arrival's (exposure id, digest); never a timestamp.
    """
    return hashlib.sha256(canonical_json([kind, *identity])).hexdigest()


@cache
def schema(message_type: str) -> dict[str, Any]:
    if message_type not in MESSAGE_TYPES:
        raise KeyError(f"unknown message type {message_type!r}")
    text = resources.files(__package__).joinpath("schemas", f"{message_type}.schema.json").read_text()
    return json.loads(text)


# jsonschema checks "date-time" only with an optional extra installed; the
# contract promises RFC 3339 times, so check them without that dependency.
_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if isinstance(value, str):  # type errors are the "type" keyword's business
        check_date_time(value)
    return True


@cache
def _validator(message_type: str) -> jsonschema.protocols.Validator:
    s = schema(message_type)
    cls = jsonschema.validators.validator_for(s)
    cls.check_schema(s)
    # Patterns read as JSON Schema (and the fast validator) reads them: "$"
    # is the end of the text, not also before a final newline.
    return jsonschema.validators.extend(cls, {"pattern": pattern_keyword})(
        s, format_checker=_FORMATS)


def is_date_time(value: str) -> bool:
    """The contract's "date-time" format, as a yes or no."""
    try:
        return _is_datetime(value)
    except ValueError:
        return False


@cache
def _fast_validator(message_type: str):
    """The same schema compiled by jsonschema-rs (Rust): a valid message is
    accepted in a few microseconds. It only ever says "valid" where the
    reference validator below does (tests/unit/test_contract.py checks both on
    every message of the hostile corpus); an invalid one is judged again by
    the reference, whose reasons operators know."""
    return jsonschema_rs.validator_for(schema(message_type), validate_formats=True,
                                       formats={"date-time": is_date_time})


def is_valid(message_type: str, body: dict[str, Any]) -> bool:
    try:
        return _fast_validator(message_type).is_valid(body)
    except ValueError:
        # A lone surrogate (JSON's "\ud800" escape) where the schema has an
        # enum or a pattern (UnicodeEncodeError): a Rust string cannot hold
        # it, and the error left every decoder (one record stopped its
        # stage's partition for good). Or, in a message about to be sent, a
        # value JSON has no text for (bytes, a set, any object: a decider's
        # bug), "Unsupported type": raised bare, it ended the planner's task,
        # which decided and raised the same after each restart. The
        # reference judges both (free text may hold a surrogate: the
        # watcher's names that are not UTF-8).
        return _validator(message_type).is_valid(body)


def validate(message_type: str, body: dict[str, Any]) -> None:
    if is_valid(message_type, body):
        return
    errors = sorted(_validator(message_type).iter_errors(body), key=lambda e: list(e.absolute_path))
    if not errors:
        # Refused by the fast check alone: a float JSON has no text for (NaN,
        # infinity), which jsonschema-rs reads as null, its reason; none when
        # a lone surrogate (which it cannot read) is in its way.
        try:
            errors = list(_fast_validator(message_type).iter_errors(body))
        except ValueError:  # as in is_valid
            errors = []
        if not errors:
            raise InvalidMessage(f"{message_type} message invalid (its fast check refused it)")
    first = errors[0]
    at = first.absolute_path if isinstance(first, jsonschema.ValidationError) \
        else first.instance_path
    where = "/".join(str(p) for p in at)[:200] or "(top level)"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    # jsonschema quotes the offending value whole: bound it for the reason.
    what = first.message if len(first.message) <= 300 else first.message[:300] + "..."
    raise InvalidMessage(f"{message_type} message invalid at {where}: {what}{more}")


def build(message_type: str, event_id: str, **fields: Any) -> Message:
    """A validated message; raises InvalidMessage rather than sending a bad one."""
    body = {
        "schema": f"calstream.{message_type}",
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "emitted_at": utc_now(),
        **fields,
    }
    validate(message_type, body)
    return Message(message_type, body)


def assemble(message_type: str, event_id: str, **fields: Any) -> Message:
    """A message built by code whose every output the tests validate (the
    planner's work orders): ``build`` without the schema check, which costs
    more than the decision that makes the message."""
    return Message(message_type, {
        "schema": f"calstream.{message_type}", "schema_version": SCHEMA_VERSION,
        "event_id": event_id, "emitted_at": utc_now(), **fields})


def encode(message: Message) -> bytes:
    """The message's bytes, once its schema takes it and it is no larger than
    every reader takes (MAX_MESSAGE_BYTES): InvalidMessage otherwise (the
    producer refused it, a "broker fault" its sender retried for ever)."""
    validate(message.type, message.body)
    return within_limit(message)


def within_limit(message: Message) -> bytes:
    """``encode`` for a message ``build`` checked against its schema: its bytes, or
    InvalidMessage over MAX_MESSAGE_BYTES (less room for the producer a send adds)."""
    try:
        value = compact_json(message.body)
    except (TypeError, ValueError) as exc:  # a value JSON has no text for, where no schema looks
        raise InvalidMessage(f"{message.type} message has no JSON text: {str(exc)[:200]}") \
            from exc
    room = 0 if "producer" in message.body else PRODUCER_ROOM_BYTES
    if len(value) > MAX_MESSAGE_BYTES - room:
        kept = f" ({room} kept for its producer field)" if room else ""
        raise InvalidMessage(f"message of {len(value)} bytes is over the "
                             f"{MAX_MESSAGE_BYTES}-byte limit every reader takes{kept}")
    return value


# Limits on what a reader accepts before it even looks at the schema. Every
# record on every topic is untrusted (a broker is shared, a producer can be
# buggy or hostile): a huge integer makes json.loads raise ValueError, a deeply
# nested array a RecursionError, NaN is not JSON, and duplicate keys mean two
# parsers may read two different messages. All of these become InvalidMessage,
# which callers turn into an ``invalid_message`` dead letter.
MAX_MESSAGE_BYTES = 1_000_000  # the producer's default max.request.size
PRODUCER_ROOM_BYTES = 512  # the publisher's producer field: host (<= 255), version, role
MAX_INTEGER_DIGITS = 30        # no calstream field needs more (offsets, sizes, counts)
# Arrays and objects in arrays and objects: calstream's messages nest a few
# levels. Fixed, and as deep as orjson writes (_WRITTEN_DEPTH, the fast
# parse's bound): the reference parse took whatever its caller's stack left
# room for, so a record 900 levels deep was a message to a reader called
# from a shallow stack and "nested too deeply" to one 100 frames deeper.
MAX_NESTING = 254


def _reject_constant(name: str) -> Any:
    raise InvalidMessage(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise InvalidMessage(f"an integer of {len(text)} digits (at most {MAX_INTEGER_DIGITS})")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise InvalidMessage(f"number {text[:40]!r} overflows to infinity")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise InvalidMessage(f"duplicate key {dup[:60]!r} in one object")
    return obj


def parse_json(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """JSON text from an untrusted source, or InvalidMessage: never another
    exception, whatever the bytes are."""
    if len(raw) > max_bytes:
        raise InvalidMessage(f"message of {len(raw)} bytes is over the {max_bytes}-byte limit")
    fast = _fast_parse(raw)
    if fast is not _UNSURE:
        return fast
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_bounded_int,
                           parse_float=_finite_float, object_pairs_hook=_unique_keys)
    except InvalidMessage as exc:
        raise InvalidMessage(f"not acceptable JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidMessage(f"not JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"not JSON: {exc}") from None
    except RecursionError:
        raise InvalidMessage("not acceptable JSON: nested too deeply") from None
    except (ValueError, OverflowError, MemoryError) as exc:
        raise InvalidMessage(f"not acceptable JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    if _nested_deeper(value, MAX_NESTING):
        raise InvalidMessage(f"not acceptable JSON: nested more than {MAX_NESTING} levels")
    return value


def _nested_deeper(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in ``value``
    (walked without recursion: a deep value is what it looks for)."""
    todo = [(value, 1)] if type(value) is dict or type(value) is list else []
    while todo:
        item, depth = todo.pop()
        if depth > limit:
            return True
        todo.extend((inner, depth + 1) for inner in (item.values() if type(item) is dict else item)
                    if type(inner) is dict or type(inner) is list)
    return False


# orjson parses a message in a fraction of the reference parse's time, but
# it keeps the last of duplicate keys, reads an integer beyond 64 bits as a
# float and nests deeper than the reference may. So its result is taken only
# where it provably is the reference's: every key token of the text (a string
# followed by ":"; the count can only overcount, never miss one) is a key of
# the result (no duplicate collapsed), no float could have been a huge
# integer, the nesting is shallow (or no deeper than orjson writes). Anything else -- and everything orjson
# refuses -- goes to the reference parse, which accepts or says why as before
# (tests/unit/test_contract.py compares both on the hostile corpus).
_UNSURE = object()
_KEY_TOKEN = re.compile(rb'"[ \t\n\r]*:')
_MAX_FAST_DEPTH = 32  # calstream messages nest a few levels; deeper ones take the reference
_WRITTEN_DEPTH = MAX_NESTING  # orjson.dumps refuses deeper (tests/unit/test_fast_paths.py)
_INT64 = 2.0**63


def _fast_parse(raw: bytes) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _UNSURE
    if _written_again(value) == raw:
        # Written as orjson writes it (compact, as every calstream writer's
        # text is, ASCII aside): a duplicate key would be missing from the
        # text written again, an integer read as a float would be written as
        # a float. And it nests at most _WRITTEN_DEPTH levels (orjson writes
        # no deeper), which the reference parse reads alike: no brackets to count.
        return value
    keys = _keys_in(value, 0)
    if keys < 0:
        return _UNSURE
    # '":' counts the key tokens written without a space before the colon
    # (every calstream writer's); the regex counts them all when there may be one.
    spaced = b'" ' in raw or b'"\n' in raw or b'"\t' in raw or b'"\r' in raw
    tokens = len(_KEY_TOKEN.findall(raw)) if spaced else raw.count(b'":')
    return value if keys == tokens else _UNSURE


def _written_again(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return None


def _keys_in(value: Any, depth: int) -> int:
    """The number of keys of every object in ``value``; -1 where unsure."""
    if depth > _MAX_FAST_DEPTH:
        return -1
    kind = type(value)
    if kind is dict:
        count, items = len(value), value.values()
    elif kind is list:
        count, items = 0, value
    elif kind is float:
        return -1 if abs(value) >= _INT64 else 0
    else:
        return 0
    for item in items:
        kind = type(item)
        if kind is dict or kind is list or kind is float:
            more = _keys_in(item, depth + 1)
            if more < 0:
                return -1
            count += more
    return count


def decode(raw: bytes | None, expected: str | tuple[str, ...] | None = None, *,
           max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse and validate a message read from a topic.

    ``expected`` restricts the accepted types (a topic carries one type).
    Raises InvalidMessage with an operator-readable reason, and nothing else.
    """
    if raw is None:
        raise InvalidMessage("empty message value (tombstone) where a message was expected")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InvalidMessage(f"a message value must be bytes, got {type(raw).__name__}")
    body = parse_json(bytes(raw), max_bytes=max_bytes)
    if not isinstance(body, dict):
        raise InvalidMessage(f"a message must be a JSON object, got {type(body).__name__}")
    name = body.get("schema")
    if not isinstance(name, str) or not name.startswith("calstream."):
        raise InvalidMessage(f"missing or unknown 'schema' field: {_short(name)}")
    message_type = name.removeprefix("calstream.")
    if message_type not in MESSAGE_TYPES:
        raise InvalidMessage(f"unknown message type {_short(name)}")
    if expected is not None:
        allowed = (expected,) if isinstance(expected, str) else expected
        if message_type not in allowed:
            raise InvalidMessage(f"a {message_type} message where {' or '.join(allowed)} was expected")
    version = body.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != str(SCHEMA_MAJOR):
        raise InvalidMessage(
            f"schema_version {_short(version)} is not readable by this reader (major {SCHEMA_MAJOR})"
        )
    try:
        validate(message_type, body)
    except RecursionError:
        raise InvalidMessage(f"{message_type} message nested too deeply to validate") from None
    return Message(message_type, body)


def _short(value: Any, limit: int = 80) -> str:
    """A value quoted for a reason text: bounded, so a reason never carries a
    megabyte of someone else's payload."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"
