"""A frozen dataclass's hash, worked out once and kept on the instance.

Routes and level-3 candidate keys are the planner's memo and index keys,
hashed several times per event; the hash dataclass makes hashes every field
(a route has fourteen, one a nested route) at each call. These two
functions are set in the class body (``__hash__ = kept_hash``: dataclass
leaves an explicit ``__hash__`` alone) and give the same value, once.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

_FIELDS: dict[type, Callable[[Any], tuple]] = {}


def _fields_of(cls: type) -> Callable[[Any], tuple]:
    names = [f.name for f in dataclasses.fields(cls)]
    getter = operator.attrgetter(*names)
    return getter if len(names) > 1 else (lambda obj: (getter(obj),))


def kept_hash(self: Any) -> int:
    """The hash of the fields' tuple, as dataclass makes it, kept after the first call."""
    try:
        # An attribute read is the cheapest way to the kept value (cheaper
        # than ``self.__dict__.get``, a method call per look-up); only an
        # object's first call raises.
        return self._hash
    except AttributeError:
        fields = _FIELDS.get(type(self))
        if fields is None:
            fields = _FIELDS[type(self)] = _fields_of(type(self))
        known = hash(fields(self))
        object.__setattr__(self, "_hash", known)  # frozen: set as dataclass's own __init__ does
        return known


def state_without_hash(self: Any) -> dict:
    """``__getstate__`` to go with it: a str's hash differs from one process to
    the next, so a pickle never carries the kept one."""
    return {k: v for k, v in self.__dict__.items() if k != "_hash"}
