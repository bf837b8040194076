"""What a dead letter carries of the record that failed.

A dead letter must always be publishable: it carries the original record so
an operator can see and redrive it, but never more than a fixed budget of it
(a 3 MB record whose dead letter carried it whole would itself exceed the
producer's size limit, fail to publish, and block its partition for ever).
The size and digest of the whole value are kept, so a truncated original can
still be matched against the record on the topic.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

ORIGINAL_BUDGET = 64 * 1024   # bytes of the original value kept in a dead letter
KEY_BUDGET = 512              # characters of the original key
REASON_BUDGET = 2000          # characters of a reason text


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
