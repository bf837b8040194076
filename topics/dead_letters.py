"""What a dead letter carries of the record that failed.

A dead letter must always be publishable: it carries the original record so
an operator can see and redrive it, but never more than a fixed budget of it
(a 3 MB record whose dead letter carried it whole would itself exceed the
producer's size limit, fail to publish, and block its partition for ever).
The size and digest of the whole value are kept, so a truncated original can
still be matched against the record on the topic.

A redrive (``calstream deadletters redrive``) is marked by a
``calstream-redrive`` header (JSON: by, reason, the dead letter's event id
and place) on the record it re-sends; a daemon that puts a dead letter back
on a broker that lost it carries the marks it kept in the same header on
the dead letter itself (doers/broker_recovery.py). A header is as untrusted
as a value: read as one is.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from calstream.topics import contract

ORIGINAL_BUDGET = 64 * 1024   # bytes of the original value kept in a dead letter
KEY_BUDGET = 512              # characters of the original key
REASON_BUDGET = 2000          # characters of a reason text
REDRIVE_HEADER = "calstream-redrive"
_NOTE_FIELDS = ("by", "reason", "dead_letter", "dead_letter_ref", "at")  # what a redrive says


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 40)] + f"... [{len(text) - limit + 40} more characters]"


def original_record(*, topic: str, partition: int, offset: int, key: bytes | None,
                    value: bytes | None, timestamp_ms: int | None,
                    budget: int = ORIGINAL_BUDGET) -> dict[str, Any]:
    """The ``original`` field of a dead letter for one consumed record."""
    out: dict[str, Any] = {
        "topic": topic, "partition": partition, "offset": offset,
        "key": bounded(key.decode("utf-8", "replace"), KEY_BUDGET) if key is not None else None,
        "timestamp_ms": timestamp_ms, "value": None, "value_encoding": "utf-8",
    }
    if value is None:
        return out
    out["value_size"] = len(value)
    out["value_sha256"] = hashlib.sha256(value).hexdigest()
    out["value_truncated"] = len(value) > budget
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        # base64 grows 4/3: keep the encoded text inside the budget too.
        out["value"] = base64.b64encode(value[: budget * 3 // 4]).decode()
        out["value_encoding"] = "base64"
        out["value_truncated"] = len(value) > budget * 3 // 4
    else:
        # Cutting at a byte budget may split a character: drop the fragment.
        out["value"] = value[:budget].decode("utf-8", "ignore")
    return out


def redrive_note(value: bytes | None) -> dict | None:
    """A ``calstream-redrive`` header's note, or None: a header is as
    untrusted as a value: read as one is (nesting too deep raised here)."""
    try:
        note = contract.parse_json(value) if isinstance(value, bytes) else None
    except contract.InvalidMessage:
        return None
    return note if isinstance(note, dict) else None


def redrive_marks(headers) -> list[dict[str, str]]:
    """The redrive notes among a record's ``headers`` worth keeping: each
    names a dead letter (text), and keeps only what a redrive says, as
    bounded text (a header a forger made a megabyte long is not kept so)."""
    marks = []
    for name, value in headers or ():
        note = redrive_note(value) if name == REDRIVE_HEADER else None
        if note is None or not isinstance(note.get("dead_letter"), str):
            continue
        marks.append({k: bounded(str(note[k]), REASON_BUDGET if k == "reason" else KEY_BUDGET)
                      for k in _NOTE_FIELDS if isinstance(note.get(k), str)})
    return marks
