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
as a value: read as one is. And a mark counts only on the dead letter's own
original record (``is_own_original``: its topic, its key, a value whose
sha256 is the letter's ``value_sha256``): anyone who may write a topic may
put a mark naming any dead letter on a record of their own, and so hid the
letter from ``deadletters list --pending``. A forger can then "redrive" a
letter only by putting back its exact original, which is a redrive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from calstream.topics import contract

ORIGINAL_BUDGET = 64 * 1024   # bytes of the original value kept in a dead letter
KEY_BUDGET = 512              # characters of the original key
REASON_BUDGET = 2000          # characters of a reason text
TEXT_BUDGET = 4096            # characters of any other text (a path: Linux's PATH_MAX)
REDRIVE_HEADER = "calstream-redrive"
_NOTE_FIELDS = ("by", "reason", "dead_letter", "dead_letter_ref", "at")  # what a redrive says
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 40)] + f"... [{len(text) - limit + 40} more characters]"


def letter_fields(*, category: str, reason: str, stage: str, attempts: int,
                  original: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """A dead letter's fields, its text bounded: the record's path, exposure id
    or digest it names come from an untrusted record, and an arrival of
    990 KB naming a path of that size outside the inbox made a letter over
    the size every reader takes: refused by the contract, retried for ever,
    its partition stopped. Bounded so, a letter is at most a few hundred KB
    (each character written as at most 12 bytes of JSON)."""
    return {"category": category, "reason": bounded(reason, REASON_BUDGET), "stage": stage,
            "attempts": attempts, "original": original,
            **{k: bounded(v, TEXT_BUDGET) if isinstance(v, str) else v for k, v in extra.items()}}


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


def original_bytes(original: dict | None, allowed: set[str] | None = None
                   ) -> tuple[bytes | None, str | None]:
    """(the original value, None), or (None, why it cannot be redriven).
    ``allowed``: the topics it may go back to (None: any, for tests)."""
    if not original or not original.get("topic"):
        return None, "the dead letter carries no original record (a file, not a message)"
    if allowed is not None and original["topic"] not in allowed:
        return None, f"its topic {str(original['topic'])[:80]!r} is not one calstream consumes"
    key = original.get("key")
    if isinstance(key, str) and not _utf8(key):
        return None, "its key is not UTF-8 text (a lone surrogate): no record had it"
    if original.get("value_truncated"):
        size = original.get("value_size")
        of = f"of {size} bytes" if type(size) is int else "of a size it does not say"
        return None, (f"the original record was truncated: the dead letter keeps its first "
                      f"part only ({of}): re-send it from its source")
    value = original.get("value")
    if value is None:
        return None, "the original record had no value"
    if not isinstance(value, str):
        return None, "the original value is not text"
    if original.get("value_encoding") == "base64":
        try:
            return base64.b64decode(value, validate=True), None
        except ValueError:  # binascii.Error, and a character that is not ASCII
            return None, "the original value is not valid base64"
    if not _utf8(value):
        return None, "the original value is not UTF-8 text (a lone surrogate)"
    return value.encode("utf-8"), None


def _utf8(text: str) -> bool:
    """Whether ``text`` is text a record can carry: a forged dead letter's
    may hold a lone surrogate (a "\ud800" escape), which no bytes encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def original_digest(original: dict | None) -> str | None:
    """The sha256 (hex) of the original value a redrive puts back, or None
    when it cannot be known: the letter's ``value_sha256`` (contract 1.2),
    else, for a letter from before it, that of the value it carries whole."""
    if not isinstance(original, dict):
        return None
    digest = original.get("value_sha256")
    if isinstance(digest, str) and _SHA256.match(digest):
        return digest
    if "value_sha256" in original or original.get("value_truncated"):
        return None  # no digest, but not for want of one: not derived from a part
    value, _ = original_bytes(original)
    return hashlib.sha256(value).hexdigest() if value is not None else None


def is_own_original(original: dict | None, topic: str, key: bytes | None,
                    value: bytes | None) -> bool:
    """Whether a record (``topic``, ``key``, ``value``) is the dead letter's
    own original put back: its topic, its key as a dead letter keeps one,
    and its value's digest. Only such a record's redrive mark counts: anyone
    who may write the topic could put a mark naming any dead letter on a
    record of their own, and hide that letter from ``list --pending``."""
    digest = original_digest(original)
    if digest is None or value is None or topic != original.get("topic"):
        return False
    kept_key = original.get("key")
    as_kept = bounded(key.decode("utf-8", "replace"), KEY_BUDGET) if key is not None else None
    return as_kept == kept_key and hmac.compare_digest(
        hashlib.sha256(value).hexdigest(), digest)


def order_identity(order: dict[str, Any]) -> dict[str, str]:
    """What a dead letter of a work order keeps of the order whole, beside its
    ``original`` (which a budget may cut): the order's work id, stage,
    namespace and product name, so that a reader of an order over the budget
    still knows which order failed (deciders/stage2_failures.py)."""
    return {k: bounded(order[k], KEY_BUDGET) for k in ORDER_FIELDS
            if isinstance(order.get(k), str)}


ORDER_FIELDS = ("work_id", "stage", "namespace", "product_name")
