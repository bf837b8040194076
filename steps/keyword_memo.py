"""Pure functions of a header, remembered by the keywords they read.

Routing an exposure, or naming the detectors it is read on, reads a few of
its header's keywords; which ones depends on the values read first (a MIRI
header is asked other things than a NIRCam one). So a first computation
runs on a header that notes every keyword read and its value, and its
result is kept under those (keyword, value) pairs: a later header with the
same values for the same keywords takes the same path to the same result,
whatever its other keywords say. The planner asks these of every exposure,
and the exposures of a visit differ only in keywords these never read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Reads:
    """A header that notes every keyword read and the value it had."""

    def __init__(self, header: Mapping[str, Any]):
        self._header, self.read = header, {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self._header.get(key, default)
        self.read.setdefault(key, self._header.get(key))
        return value

    def __getitem__(self, key: str) -> Any:
        value = self._header[key]
        self.read.setdefault(key, value)
        return value


def _same_as(value: Any) -> tuple:
    # 1, 1.0 and True are equal keys but read differently; -0.0 and 0.0 too.
    return (type(value), repr(value) if type(value) is float else value)


def _float_texts(values: tuple) -> tuple:
    return tuple(repr(v) for v in values if type(v) is float)


def same_scalars(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two flat headers (keyword -> a JSON scalar) say the same in
    every way a check can read: equal, with their keywords in the same order
    and each value of the same type (``==`` alone takes 1, 1.0 and True for
    one value, ``{"A": 1, "B": True}`` for ``{"B": 1, "A": True}``), floats
    with the same text (0.0, -0.0). A false "not the same" only costs a
    judgement made again."""
    if a is b:
        return True
    if a != b or list(a) != list(b):
        return False
    types = tuple(map(type, a.values()))
    return types == tuple(map(type, b.values())) and (
        float not in types or _float_texts(tuple(a.values())) == _float_texts(tuple(b.values())))


class ByKeywordsRead(Generic[T]):
    """``compute(header, *context)``, remembered by the keywords its computation read.

    ``compute`` must be pure, read the header only with ``get`` or ``[]``
    and depend on nothing else than the header and ``context`` (hashable
    values, part of every key). Results are grouped by the context and the
    header's value of ``first`` (a keyword that separates the paths, such as
    EXP_TYPE), so a lookup tries the few paths of its group.
    ``passes``: exceptions that are the answer (raised again, not kept);
    any other exception is the recording's fault: computed again on the
    header itself, not kept.
    """

    LIMIT = 20_000

    def __init__(self, compute: Callable[..., T], *, first: str,
                 passes: tuple[type[BaseException], ...] = ()):
        self._compute, self._first, self._passes = compute, first, passes
        # group -> ((keywords read, their values -> (types, floats' texts, result)), ...):
        # a group's paths are a tuple, replaced whole when one is added, so a
        # lookup reads them without a copy while a thread may add one.
        self._paths: dict[tuple, tuple[tuple[tuple[str, ...], dict[tuple, tuple]], ...]] = {}
        self._size = 0

    def __call__(self, header: Mapping[str, Any], *context: Any) -> T:
        try:
            first = header.get(self._first)
        except AttributeError:  # a header that is no dict: computed, not kept
            return self._compute(header, *context)
        group = (context, type(first), repr(first) if type(first) is float else first)
        # Results are kept under the plain values read (C-speed to gather and
        # hash), with their types and their floats' texts beside them: a
        # value equal but read differently (1, 1.0, True; 0.0, -0.0) is a miss.
        try:
            for keys, results in self._paths.get(group, ()):
                values = tuple(map(header.get, keys))
                kept = results.get(values)
                if kept is not None and kept[0] == tuple(map(type, values)) and (
                        kept[1] is None or kept[1] == _float_texts(values)):
                    return kept[2]
        except TypeError:  # an unhashable value: computed, not kept
            pass
        reads = _Reads(header)
        try:
            found = self._compute(reads, *context)
        except self._passes:
            raise
        except Exception:  # noqa: BLE001 - the recording went wrong: computed unrecorded
            return self._compute(header, *context)
        self.keep(reads.read, found, group)
        return found

    def keep(self, read: dict[str, Any], found: T, group: tuple) -> None:
        if found is None:
            return
        if self._size >= self.LIMIT:
            self._paths, self._size = {}, 0
        values = tuple(read.values())
        types = tuple(map(type, values))
        try:
            hash((group, values))  # an unhashable value: nothing kept, not even its path
            paths = self._paths.get(group, ())
            results = next((r for k, r in paths if k == tuple(read)), None)
            if results is None:
                results = {}
                self._paths[group] = (*paths, (tuple(read), results))
            results[values] = (types, _float_texts(values) if float in types else None, found)
            self._size += 1
        except TypeError:
            pass
