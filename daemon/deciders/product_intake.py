"""A products record's way in: bytes to an event the planner may decide on.

Every record is untrusted: it is decoded and validated against its schema
(``contract.decode``), judged possible (``event_checks.product_event_problems``)
and its event id checked against the content the id stood for before
(``event_checks.EventIds``). The planner loop and bench/bench_planner.py
both go this way.

A redelivery (the broker's, a restart's re-read) is the same bytes again,
and those three judgements depend on nothing but the bytes and the
planner's configured roots: bytes accepted once are accepted again, as the
same event. So accepted records are remembered by a digest of their bytes
(a bounded memory, the most recent ``capacity``) and a redelivery skips the
decoding and the checks; only the event-id check runs again, from the kept
content digest, as it depends on what came since. Anything else -- a
re-emission with a new ``emitted_at``, one changed byte -- is judged whole.

The schema check of a new record is jsonschema-rs without its format
callbacks (a call back into python per date-time costs as much as the rest
of the check), then the three date-times the product schema has, each by
the contract's own date-time rule: what ``contract.decode`` accepts, no more
(tests/unit/test_fast_paths.py checks that the schema has no other format).
Anything refused on this way is decoded again by ``contract.decode``, which
refuses it with its reason.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from functools import cache
from typing import Any

import jsonschema_rs

from calstream.daemon.deciders.event_checks import (
    EventIds,
    content_digest,
    product_event_problems,
)
from calstream.topics import contract


class ProductIntake:
    def __init__(self, *, products_root: str, input_roots: Iterable[str],
                 capacity: int = 100_000):
        self.products_root = str(products_root)
        self.input_roots = tuple(str(r) for r in input_roots)
        self.capacity = capacity
        # digest of the bytes -> (the event they decoded to, its content digest)
        self._accepted: OrderedDict[bytes, tuple[contract.Message, bytes]] = OrderedDict()

    def take(self, raw: bytes, event_ids: EventIds) -> tuple[contract.Message, list[str]]:
        """(event, problems): the problems that make it impossible, empty if none.

        Raises contract.InvalidMessage for bytes that are no product event.
        """
        # sha256: collision-resistant (a forged record must not pass for an
        # accepted one) and, with the CPU's SHA instructions, twice blake2b's speed.
        if type(raw) is bytes:
            key = hashlib.sha256(raw).digest()
        else:
            key = hashlib.sha256(bytes(raw)).digest() \
                if isinstance(raw, bytearray | memoryview) else None
        known = self._accepted.get(key) if key is not None else None
        if known is not None:
            self._accepted.move_to_end(key)
            event, digest = known
            return event, self._id_problems(event, digest, [], event_ids)
        event = decode_product(raw)
        problems = product_event_problems(event.body, products_root=self.products_root,
                                          input_roots=self.input_roots)
        digest = content_digest(event.body, parsed=True)  # decoded from bytes just now
        problems = self._id_problems(event, digest, problems, event_ids)
        if not problems and key is not None:
            self._accepted[key] = (event, digest)
            if len(self._accepted) > self.capacity:
                self._accepted.popitem(last=False)
        return event, problems

    @staticmethod
    def _id_problems(event: contract.Message, digest: bytes, problems: list[str],
                     event_ids: EventIds) -> list[str]:
        if not event_ids.consistent_digest(event.event_id, digest):
            problems = [*problems,
                        f"event id {event.event_id[:12]} was already used for other content"]
        return problems


# Where the product schema asks for "format": "date-time" (the only format it uses).
DATE_TIMES = (("emitted_at",), ("arrived_at",), ("replay", "requested_at"))
_MAJOR = f"{contract.SCHEMA_MAJOR}."


@cache
def _structure() -> Any:
    # The regex crate for the patterns, not fancy-regex (jsonschema-rs's
    # default): the product schema's patterns are plain regular expressions,
    # which both match alike (fancy-regex hands them to the regex crate),
    # and the check takes a fifth less without fancy-regex's wrapping
    # (tests/unit/test_intake_shortcuts.py compares both).
    return jsonschema_rs.validator_for(contract.schema("product"), validate_formats=False,
                                       pattern_options=jsonschema_rs.RegexOptions())


def _valid_product(body: dict[str, Any]) -> bool:
    try:
        if not _structure().is_valid(body):
            return False
    except UnicodeEncodeError:  # a lone surrogate: contract.decode judges it (is_valid)
        return False
    for value in _date_times(body):
        if type(value) is str and not contract.is_date_time(value):
            return False
    return True


def _date_times(body: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The values at DATE_TIMES' paths (None where a path leads nowhere),
    written out: the walk along the paths costs as much as one check."""
    replay = body.get("replay")
    return (body.get("emitted_at"), body.get("arrived_at"),
            replay.get("requested_at") if type(replay) is dict else None)


def decode_product(raw: Any) -> contract.Message:
    """``contract.decode(raw, expected="product")``, the common case faster."""
    if isinstance(raw, bytes):
        body = contract.parse_json(raw)  # raises InvalidMessage as decode would
        if type(body) is dict and body.get("schema") == "calstream.product":
            version = body.get("schema_version")
            if isinstance(version, str) and version.startswith(_MAJOR) and _valid_product(body):
                return contract.Message("product", body)
    return contract.decode(raw, expected="product")
