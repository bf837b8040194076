"""Columns of similar JSON values, each written as what changed since the one before (pure).

A planner snapshot holds hundreds of thousands of product events and
headers that differ from their neighbours in a few fields (an exposure
number, a digest, a time). Written whole they are ~2 KB each; written as
"the previous one, but these keys" they are a tenth of that before
compression, and they are read back by copying the previous value and
setting those keys -- a dict copy instead of parsing and building every
key again. Unchanged parts (nested dicts, lists, strings) are shared with
the previous value, as one object: the planner never changes an event or a
header it keeps, it replaces them.

An encoded value is a scalar (itself), or a list tagged by its first item:
``["=", value]`` the value whole; ``["~", key, change, ...]`` a dict with the
previous one's keys in the previous one's order, these changed;
``["#", index, change, ...]`` the same for a list of the previous one's
length. A nested container of which half or more changed is written
whole: the JSON reader builds it faster than a copy and its changes would
(a row itself is always a change: what it shares with the previous row is
kept once in memory). A value of another type than its predecessor's (True after 1) is
a change, so nothing comes back as an equal value of another type.

Reading raises ValueError (or KeyError, IndexError, TypeError) for
anything that does not follow this shape: the snapshot is then refused
whole.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

WHOLE, DICT, LIST = "=", "~", "#"


def encode_column(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    previous: Any = None
    for value in values:
        out.append(_encode(value, previous, nested=False))
        previous = value
    return out


def _encode(value: Any, previous: Any, nested: bool = True) -> Any:
    kind = type(value)
    if kind is dict:
        if type(previous) is not dict or len(previous) != len(value) or \
                list(value) != list(previous):
            return [WHOLE, value]
        delta: list[Any] = [DICT]
        for (key, item), before in zip(value.items(), previous.values(), strict=True):
            if item is not before and not _same_scalar(item, before):
                delta += (key, _encode(item, before))
        return delta if not nested or len(delta) <= len(value) else [WHOLE, value]
    if kind is list:
        if type(previous) is not list or len(previous) != len(value):
            return [WHOLE, value]
        delta = [LIST]
        for i, (item, before) in enumerate(zip(value, previous, strict=True)):
            if item is not before and not _same_scalar(item, before):
                delta += (i, _encode(item, before))
        return delta if not nested or len(delta) <= len(value) else [WHOLE, value]
    return value


def _same_scalar(a: Any, b: Any) -> bool:
    """Equal and of one type (True is not 1); containers are compared item by item."""
    kind = type(a)
    return kind is type(b) and kind is not dict and kind is not list and a == b


def decode_column(encoded: list[Any]) -> list[Any]:
    if type(encoded) is not list:
        raise ValueError("a column is not a list")
    out: list[Any] = []
    previous: Any = None
    for item in encoded:
        if type(item) is not list:
            previous = item
        elif item[0] == DICT and type(previous) is dict and len(item) & 1:
            # The common row, decoded here rather than in _decode (a call per
            # row is a fifth of a restore's decoding): the same checks.
            value = previous.copy()
            for n in range(1, len(item), 2):
                change = item[n + 1]
                value[item[n]] = _decode(change, value[item[n]]) if type(change) is list \
                    else change
            if len(value) != len(previous):
                raise ValueError("a change to a key the previous value does not have")
            previous = value
        else:
            previous = _decode(item, previous)
        out.append(previous)
    return out


def _decode(item: list[Any], previous: Any) -> Any:
    tag = item[0]
    if tag == DICT and type(previous) is dict or tag == LIST and type(previous) is list:
        if not len(item) & 1:
            raise ValueError("a change without its value")
        value = previous.copy()
        for key, change in zip(item[1::2], item[2::2], strict=True):
            value[key] = _decode(change, value[key]) if type(change) is list else change
        if len(value) != len(previous):
            raise ValueError("a change to a key the previous value does not have")
        return value
    if tag == WHOLE and len(item) == 2:
        return item[1]
    raise ValueError(f"an encoded value tagged {str(tag)[:10]!r} after a {type(previous).__name__}")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Millions of new objects, none of them garbage: with the cyclic
    collector on, reading a snapshot takes twice as long (each collection
    walks everything read so far)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
