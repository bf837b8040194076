"""The dead letters `calstream status` and the console show, read from the
tail of the dead-letter topic as it is fetched (``LetterTail``, a fold of
status_collection's reading), each kept as ``kept_letter`` makes it."""

from __future__ import annotations

from typing import Any

from calstream.daemon.operations.status_summary import BrokerView
from calstream.topics import contract
from calstream.topics.dead_letters import (
    REASON_BUDGET,
    REDRIVE_HEADER,
    TEXT_BUDGET,
    bounded,
    original_digest,
)


class LetterTail:
    """The dead-letter topic's tail folded a fetch at a time (``add``, in a
    thread): each letter decoded as it comes and kept as ``kept_letter``
    makes it, each event id once (its latest record), with the redrive
    marks its record carries. The records themselves were kept, then
    decoded whole: 500 forged letters of a megabyte each (the console's
    tail) held a gigabyte in the daemon at each rebuild."""

    def __init__(self, view: BrokerView) -> None:
        self.view = view
        self.latest: dict[str, dict[str, Any]] = {}
        self.marks: list[tuple[list, str]] = []  # (redrive headers, event id)

    def add(self, records) -> None:
        for r in records:
            try:
                msg = contract.decode(r.value, expected="dead_letter")
            except contract.InvalidMessage:
                self.view.count_unreadable()
                continue
            self.latest.pop(msg.event_id, None)  # the latest record, in its own place
            self.latest[msg.event_id] = {**kept_letter(msg.body), "_topic": r.topic,
                                         "_partition": r.partition, "_offset": r.offset}
            marks = [(k, v) for k, v in r.headers or () if k == REDRIVE_HEADER
                     and v is not None and len(v) <= MARK_BYTES]
            if marks:
                self.marks.append((marks, msg.event_id))

    def newest(self, n: int) -> list[dict[str, Any]]:
        out = sorted(self.latest.values(),
                     key=lambda m: (contract.parse_time(m["emitted_at"]), m["_offset"]))
        return out[-n:] if n else []


MARK_BYTES = 64 << 10  # a redrive header's note is a few hundred bytes


def kept_letter(body: dict[str, Any]) -> dict[str, Any]:
    """What status and the console keep of a dead letter: its texts bounded
    as a letter calstream writes them (topics/dead_letters.letter_fields),
    its original without the value it carries (its digest instead, all a
    redrive mark is judged by: ``original_digest``), fields of its own that
    are no text or number left out. Anyone may write the topic."""
    out: dict[str, Any] = {}
    for k, v in body.items():
        if k == "original":
            out[k] = _kept_original(v)
        elif k in ("order", "producer") and isinstance(v, dict):
            out[k] = _scalars(v)
        elif isinstance(v, str):
            out[k] = bounded(v, REASON_BUDGET if k == "reason" else TEXT_BUDGET)
        elif v is None or type(v) in (int, float, bool):
            out[k] = v
    return out


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    return {k: bounded(v, TEXT_BUDGET) if isinstance(v, str) else v for k, v in d.items()
            if v is None or isinstance(v, str) or type(v) in (int, float, bool)}


def _kept_original(original: Any) -> Any:
    if not isinstance(original, dict):
        return original
    kept = _scalars({k: v for k, v in original.items() if k != "value"})
    kept["value_sha256"] = original_digest(original)
    return kept
