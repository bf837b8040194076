"""A planner snapshot's blocks taken as the last snapshot stored them, when their rows are the same (pure).

Encoding a million events' blocks is a minute of CPU (delta-encoding
every event and header, JSON, zlib), though between two snapshots the
planner replaces the records of a few thousand exposures and appends new
ones; records are never changed in place (deciders/planner_snapshot.py), and
a map keeps a replaced key where it was, so every other block of rows is
the same rows as before. So a column's block is written again only when one
of its rows is another object than in the last snapshot; otherwise its
bytes, compressed as stored then, are written as they are.

A row's *key* says what was encoded: ``id`` of the record's part, or for a
part a restore left unread (snapshot_blocks.Pending) its column and row,
and for events the key of the header their ``SHARED`` stands for. A
``BlockCache`` holds, per column, the keys of each block stored (packed in
an array of ints: 16 or 32 bytes a row) and its bytes, and keeps every
object whose id is a key alive (so no new object can have an old id). A restore from the file seeds it with the file's own
blocks (``seed``), keyed as a capture of the unread state keys them: a
snapshot written after a restart reuses every block nobody read.

A block reused as stored keeps what it was: it is not read again when
written (a block that cannot be read is still found when a decision first
reads it: doers/planner_rebuilds.rebuilding_when_unreadable).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

from calstream.daemon.deciders.snapshot_blocks import BLOCK_ROWS, Pending
from calstream.daemon.deciders.snapshot_columns import encode_column


class Stored:
    """A block as a snapshot file stores it: zlib-compressed JSON, and its size decompressed."""

    __slots__ = ("data", "raw_size")

    def __init__(self, data: bytes | memoryview, raw_size: int) -> None:
        self.data, self.raw_size = data, raw_size


class _Entry:
    __slots__ = ("keys", "stored")

    def __init__(self, keys: list, stored: Stored | int) -> None:
        self.keys, self.stored = keys, stored  # stored: a block number until written


class BlockCache:
    """The last snapshot's blocks by column name (``namespace/table/column``)."""

    def __init__(self) -> None:
        self._columns: dict[str, list[_Entry] | Callable[[], list[_Entry]]] = {}
        self.alive: list = []  # what the keys' ids are ids of

    def entries(self, name: str) -> list[_Entry]:
        entries = self._columns.get(name, [])
        if callable(entries):  # a restore's seed: keyed when first needed
            entries = self._columns[name] = entries()
        return entries

    def seed(self, name: str, column: Any, key: Callable[[int], tuple]) -> None:
        """A restored BlockedColumn's stored blocks, row ``r`` keyed ``key(r)``."""
        def entries() -> list[_Entry]:
            return [_Entry(_packed(map(key, range(n * BLOCK_ROWS, min(
                (n + 1) * BLOCK_ROWS, column.length)))), column.stored(n))
                for n in range(-(-column.length // BLOCK_ROWS))]
        self.alive.append(column)
        self._columns[name] = entries


def _packed(keys: Iterable[tuple]) -> array:
    """A block's keys as one array of ints: compared at C speed, 8 bytes an int."""
    return array("q", chain.from_iterable(keys))


class BlockWriter:
    """A snapshot's ``blocks``: each column's blocks encoded, or reused from
    ``reuse`` (the last snapshot's) when their rows' keys are the same.
    ``written(stored)`` is then the cache for the next snapshot."""

    def __init__(self, reuse: BlockCache | None) -> None:
        self.blocks: list = []  # encoded (a JSON-able list) or Stored
        self.reused = 0
        self._reuse = reuse
        self._next = BlockCache()
        self._columns: dict[int, Any] = {}  # restored columns keyed by id

    def key(self, part: Any) -> tuple[int, int]:
        """A row's part as two ints: the object's id, or the restored column
        and row it stands for; what they are ids of is kept alive."""
        if type(part) is Pending:
            self._columns[id(part.column)] = part.column
            return id(part.column), part.row
        self._next.alive.append(part)
        return id(part), -1

    def column(self, name: str, keys: list[tuple], rows: Callable[[int, int], list]
               ) -> list[int]:
        """The blocks of a column of ``len(keys)`` rows (a key: a tuple of
        ints, made of ``key``s); ``rows(start, end)`` gives the values of
        those rows, asked only for a block to encode."""
        old = self._reuse.entries(name) if self._reuse is not None else []
        numbers, entries = [], []
        for n, start in enumerate(range(0, len(keys), BLOCK_ROWS)):
            end = min(start + BLOCK_ROWS, len(keys))
            block_keys = _packed(keys[start:end])
            numbers.append(len(self.blocks))
            if n < len(old) and old[n].keys == block_keys and type(old[n].stored) is Stored:
                self.blocks.append(old[n].stored)
                self.reused += 1
            else:
                self.blocks.append(encode_column(rows(start, end)))
            entries.append(_Entry(block_keys, numbers[-1]))
        self._next._columns[name] = entries
        return numbers

    def written(self, stored: list[Stored]) -> BlockCache:
        """The cache for the next snapshot, once ``blocks`` are stored as ``stored``."""
        if len(stored) != len(self.blocks):
            raise ValueError("not every block was stored")
        for entries in self._next._columns.values():
            for entry in entries:  # type: ignore[union-attr]
                entry.stored = stored[entry.stored]  # type: ignore[index]
        self._next.alive += self._columns.values()
        return self._next
