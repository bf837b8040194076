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
``BlockCache`` holds, per column, the keys of each block stored and its
bytes, and keeps every object whose id is a key alive (so no new object can
have an old id). A restore from the file seeds it with the file's own
blocks (``seed``), keyed as a capture of the unread state keys them: a
snapshot written after a restart reuses every block nobody read.

A block reused as stored keeps what it was: it is not read again when
written (a block that cannot be read is still found when a decision first
reads it: doers/planner_restore.rebuilding_when_unreadable).
"""

from __future__ import annotations

from collections.abc import Callable
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

    def seed(self, name: str, column: Any, key: Callable[[int], Any]) -> None:
        """A restored BlockedColumn's stored blocks, row ``r`` keyed ``key(r)``."""
        def entries() -> list[_Entry]:
            return [_Entry([key(r) for r in range(n * BLOCK_ROWS, min(
                (n + 1) * BLOCK_ROWS, column.length))], column.stored(n))
                for n in range(-(-column.length // BLOCK_ROWS))]
        self.alive.append(column)
        self._columns[name] = entries


def row_key(part: Any) -> Any:
    """What a row's part is: the object, or the restored row it stands for."""
    return (id(part.column), part.row) if type(part) is Pending else id(part)


class BlockWriter:
    """A snapshot's ``blocks``: each column's blocks encoded, or reused from
    ``reuse`` (the last snapshot's) when their rows' keys are the same.
    ``written(stored)`` is then the cache for the next snapshot."""

    def __init__(self, reuse: BlockCache | None) -> None:
        self.blocks: list = []  # encoded (a JSON-able list) or Stored
        self.reused = 0
        self._reuse = reuse
        self._next = BlockCache()

    def column(self, name: str, keys: list, rows: Callable[[int, int], list]) -> list[int]:
        """The blocks of a column of ``len(keys)`` rows; ``rows(start, end)``
        gives the values of those rows, asked only for a block to encode."""
        old = self._reuse.entries(name) if self._reuse is not None else []
        numbers, entries = [], []
        for n, start in enumerate(range(0, len(keys), BLOCK_ROWS)):
            end = min(start + BLOCK_ROWS, len(keys))
            block_keys = keys[start:end]
            numbers.append(len(self.blocks))
            if n < len(old) and old[n].keys == block_keys and type(old[n].stored) is Stored:
                self.blocks.append(old[n].stored)
                self.reused += 1
            else:
                self.blocks.append(encode_column(rows(start, end)))
            entries.append(_Entry(block_keys, numbers[-1]))
        self._next._columns[name] = entries
        return numbers

    def keep(self, *things: Any) -> None:
        """Objects whose ids are keys of this snapshot's blocks."""
        self._next.alive.extend(things)

    def written(self, stored: list[Stored]) -> BlockCache:
        """The cache for the next snapshot, once ``blocks`` are stored as ``stored``."""
        if len(stored) != len(self.blocks):
            raise ValueError("not every block was stored")
        for entries in self._next._columns.values():
            for entry in entries:  # type: ignore[union-attr]
                entry.stored = stored[entry.stored]  # type: ignore[index]
        return self._next
