"""The canonical text of a JSON value: what event ids and digests are made of.

``json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)``,
written by orjson where orjson writes the same bytes (several times faster).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson


def canonical_json(value: Any) -> bytes:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)``.

    Ids and digests made from it outlive the process (topics, snapshots), so
    its text is fixed. orjson writes the same bytes several times faster for
    plain JSON values in ASCII, except a DEL character and floats below 1e-4
    (which it writes without an exponent); anything of that kind goes to
    ``json``. (tests/unit/test_fast_paths.py compares both.)
    """
    if _plain_json(value, 0):
        fast = _sorted_orjson(value)
        if fast is not None:
            return fast
    return _reference_json(value)


def compact_json(value: Any) -> bytes:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"))``: what a
    message is sent as (``contract.encode``). ``canonical_json`` without its
    ``default=str``: a value JSON has no text for raises TypeError, as
    ``json.dumps`` does, rather than being sent as its ``str``. orjson writes
    it where its bytes are the same (a stage-2 order: 6 us against 18 us).
    """
    if _plain_json(value, 0):
        fast = _sorted_orjson(value)
        if fast is not None:
            return fast
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def canonical_json_of_parsed(value: Any) -> bytes:
    """``canonical_json`` of a value ``parse_json`` returned (or a dict of
    its parts): only JSON's own types, so the walk over every item that
    ``canonical_json`` needs to prove that is skipped. What is left to
    rule out is a float below 1e-4, looked for in orjson's text instead:
    orjson writes every other finite float as ``repr`` does, and those
    always as ``0.0000...`` after a ``:``, ``,`` or ``[`` (a minus sign
    between) or with a digit before ``e-`` (tests/unit/test_fast_paths.py
    checks this over millions of floats). Text that merely looks so (in a
    string) goes to ``json`` too: the same bytes, more slowly.
    """
    fast = _sorted_orjson(value)
    if fast is None or ((_EXPONENT.search(fast) or b"0.0000" in fast)
                        and _SMALL_FLOAT.search(fast)):
        return _reference_json(value)
    return fast


_SMALL_FLOAT = re.compile(rb"[:,\[]-?0\.0000|[0-9]e-")
# The regex finds "e-" in half the time ``b"e-" in`` does in a text of hex
# digests, dense in "e"s; ``in`` is the faster for "0.0000" (timed, 1.7 KB events).
_EXPONENT = re.compile(rb"e-")


def _sorted_orjson(value: Any) -> bytes | None:
    """orjson's sorted text where it is ``json``'s for JSON values: ASCII,
    no DEL (``json`` escapes both); None otherwise."""
    try:
        fast = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None  # an integer beyond 64 bits, nesting beyond orjson's limit
    return fast if fast.isascii() and b"\x7f" not in fast else None


def _reference_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def _plain_json(value: Any, depth: int) -> bool:
    """Only JSON's own types (tuples as lists), floats both write alike,
    shallow nesting (a key that is no str makes orjson refuse: not looked at)."""
    if depth > 32:
        return False
    kind = type(value)
    if kind is not dict and kind is not list and kind is not tuple:
        return _plain_json([value], depth)
    for item in value.values() if kind is dict else value:
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float:
            if item == 0.0 or 1e-4 <= abs(item) < 1e16:
                continue
            return False
        if (kind is dict or kind is list or kind is tuple) and _plain_json(item, depth + 1):
            continue
        return False
    return True
