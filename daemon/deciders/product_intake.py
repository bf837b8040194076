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
    share_clean_header,
)
from calstream.daemon.deciders.store_move import rerooted_event, rerooter
from calstream.topics import contract

# What ``take`` gives for one record: (event, problems), or what it raised.
Taken = tuple[contract.Message, list[str]] | Exception


class ProductIntake:
    def __init__(self, *, products_root: str, input_roots: Iterable[str],
                 capacity: int = 100_000, moved_from: Iterable[str] = ()):
        self.products_root = str(products_root)
        self.input_roots = tuple(str(r) for r in input_roots)
        # The store moved (store_move.py): an event's paths under an earlier
        # root are read under this one before they are judged and decided on.
        self.reroot = rerooter(moved_from, self.products_root)
        self.capacity = capacity
        # digest of the bytes -> (the event they decoded to, its content digest)
        self._accepted: OrderedDict[bytes, tuple[contract.Message, bytes]] = OrderedDict()

    def take(self, raw: bytes, event_ids: EventIds) -> tuple[contract.Message, list[str]]:
        """(event, problems): the problems that make it impossible, empty if none.

        Raises contract.InvalidMessage for bytes that are no product event.
        """
        taken = self.take_each([raw], event_ids)[0]
        if isinstance(taken, Exception):
            raise taken
        return taken

    def take_each(self, raws: Iterable[Any], event_ids: EventIds) -> list[Taken]:
        """``take`` of each of ``raws`` in their order: a list of (event,
        problems), or the exception ``take`` raised for that record (the
        loop raises it at the record's decision, which dead-letters it).

        The planner loop takes a fetch's records this way before it decides
        on them one by one, and the work goes in passes over the records
        (look-ups, decoding, judging, event ids): the same results as taking
        each record just before its decision (``take`` depends on nothing the
        decisions change, and the event ids and the memory of accepted bytes
        see the records in order), for a tenth less of a fresh event (bench/
        README.md, session 29): each pass's code and tables stay in the CPU's
        caches instead of being pushed out by a decision between two records.
        """
        raws = list(raws)
        accepted = self._accepted
        keys = [_key(raw) for raw in raws]
        known = [accepted.get(k) if k is not None else None for k in keys]
        decoded = [None if kept is not None else _or_raised(decode_product, raw)
                   for raw, kept in zip(raws, known, strict=True)]
        if self.reroot is not None:  # one test a fetch when the store never moved
            decoded = [self._moved(e) for e in decoded]
        judged = [_or_raised(self._judge, e) if type(e) is contract.Message else None
                  for e in decoded]
        taken: list[Taken] = []
        for key, kept, event, judgement in zip(keys, known, decoded, judged, strict=True):
            if key is not None and key in accepted:
                # Accepted bytes again (at the look-up, or earlier in this batch).
                kept_event, digest = accepted[key]
                accepted.move_to_end(key)
                taken.append((kept_event, self._id_problems(kept_event, digest, [],
                                                            event_ids)))
                continue
            if kept is not None:  # forgotten since the look-up: decoded, it is the same
                event, judgement = kept[0], ([], kept[1])
            if isinstance(judgement, tuple):
                problems, digest = judgement
            else:  # what decoding or judging raised
                taken.append(event if judgement is None else judgement)
                continue
            problems = self._id_problems(event, digest, problems, event_ids)
            if not problems and key is not None:
                accepted[key] = (event, digest)
                if len(accepted) > self.capacity:
                    accepted.popitem(last=False)
            taken.append((event, problems))
        return taken

    def _moved(self, event: Any) -> Any:
        if type(event) is not contract.Message:
            return event
        return contract.Message(event.type, rerooted_event(event.body, self.reroot))

    def _judge(self, event: contract.Message) -> tuple[list[str], bytes]:
        """(why it is impossible, its content digest)."""
        share_clean_header(event.body)  # judged as its own copy would be: identical
        return (product_event_problems(event.body, products_root=self.products_root,
                                       input_roots=self.input_roots),
                content_digest(event.body, parsed=True))  # decoded from bytes just now

    @staticmethod
    def _id_problems(event: contract.Message, digest: bytes, problems: list[str],
                     event_ids: EventIds) -> list[str]:
        if not event_ids.consistent_digest(event.event_id, digest):
            problems = [*problems,
                        f"event id {event.event_id[:12]} was already used for other content"]
        return problems


def _key(raw: Any) -> bytes | None:
    """What accepted bytes are remembered by. sha256: collision-resistant (a
    forged record must not pass for an accepted one) and, with the CPU's SHA
    instructions, twice blake2b's speed."""
    if type(raw) is bytes:
        return hashlib.sha256(raw).digest()
    return hashlib.sha256(bytes(raw)).digest() \
        if isinstance(raw, bytearray | memoryview) else None


def _or_raised(work, value):
    """``work(value)``, or the exception it raised: one record's fault stays
    that record's (in a batch, the others are still taken)."""
    try:
        return work(value)
    except Exception as exc:  # noqa: BLE001 - raised again at the record's decision
        return exc


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
