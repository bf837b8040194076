"""A mapping of records built the first time something reads them (pure).

A restored snapshot holds a record per exposure (its detector1 event, its
arrival, its stage-2 event), and building them all -- an Exposure, dicts of
outputs, a dataclass -- was most of a restore's time, though after a restart
the planner reads few of them: the exposures of the tail's visits and
candidates, an order's members, a status query's visits. ``LazyRecords``
keeps each restored record as its parts and builds it when a decision first
reads it, then keeps the built record in the same place (same key order,
as a dict that was given every record at once).

An unbuilt record is its ``Parts``, or -- in what a restore makes -- its
row number in the restored columns: then ``build`` is a
restored_records.Rows, which reads the row's parts from the columns when
the record is built, and hands them (``parts``) to a snapshot without
building it. A row number costs no object per record (a million records
restore in a fraction of a second).

It behaves as the dict it replaces: reading a value (``[]``, ``get``,
``values``, ``items``, ``pop``) builds it; ``in``, ``len`` and iterating
over keys build nothing; writing a key replaces its parts with the record.
Only ``raw_items`` and ``peek`` see the parts, for the snapshot itself
(deciders/planner_snapshot.py): taking a snapshot after a restart must not
build what nobody read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

_MISSING = object()


class Parts(tuple):
    """A record not built yet: the parts its builder takes (never changed)."""

    __slots__ = ()


def unbuilt(value: Any) -> bool:
    """Whether a stored value is a record not built yet (records are never ints)."""
    kind = type(value)
    return kind is Parts or kind is int


class LazyRecords(MutableMapping):
    """Key -> record; a value that is ``Parts`` (or a row number) is built
    by ``build(key, value)`` when read."""

    __slots__ = ("_rows", "_build")

    def __init__(self, rows: dict[str, Any], build: Callable[[str, Parts], Any]) -> None:
        self._rows = rows
        self._build = build

    def __getitem__(self, key: str) -> Any:
        value = self._rows[key]
        if type(value) is int or type(value) is Parts:
            value = self._rows[key] = self._build(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._rows.get(key, _MISSING)
        if value is _MISSING:
            return default
        if type(value) is int or type(value) is Parts:
            value = self._rows[key] = self._build(key, value)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __setitem__(self, key: str, value: Any) -> None:
        self._rows[key] = value

    def __delitem__(self, key: str) -> None:
        del self._rows[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (dict, LazyRecords)):
            return NotImplemented
        return len(self) == len(other) and all(
            k in other and self[k] == other[k] for k in self._rows)

    __hash__ = None  # type: ignore[assignment]  # as a dict: mutable, unhashable

    def __repr__(self) -> str:
        built = sum(1 for v in self._rows.values() if not unbuilt(v))
        return f"LazyRecords({len(self._rows)} records, {built} built)"

    def copy(self) -> dict[str, Any]:
        return dict(self.items())

    def peek(self, key: str, default: Any = None) -> Any:
        """The record or its parts, building nothing."""
        value = self._rows.get(key, default)
        return self._build.parts(value) if type(value) is int else value

    def raw_items(self):
        parts = getattr(self._build, "parts", None)
        return ((k, parts(v) if type(v) is int else v) for k, v in self._rows.items())


def raw_items(records: MutableMapping) -> Any:
    """(key, record or Parts) of a dict or a LazyRecords, building nothing."""
    return records.raw_items() if type(records) is LazyRecords else records.items()


def key_dict(records: MutableMapping) -> dict:
    """A dict with the keys of a dict or a LazyRecords (its values are not
    the records): for ``in`` and set operations at C speed (a set's
    ``difference`` with a dict looks each of its own items up in it)."""
    return records._rows if type(records) is LazyRecords else records
