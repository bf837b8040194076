"""The heavy columns of a planner snapshot, in blocks read when first needed (pure).

A million events of history are half a million detector1 events, as many
stage-2 events and their headers: a gigabyte of JSON, twenty seconds and
more to parse, though after a restart the planner reads few of them (the
tail's visits, an order's members, a status query). So these columns are
written as blocks of ``BLOCK_ROWS`` rows (each encoded on its own by
deciders/snapshot_columns.py: a block needs no other to be read, and a
block whose rows did not change is written again as it was stored:
deciders/snapshot_reuse.py), kept in the snapshot's ``blocks`` list, and
a ``BlockedColumn`` decodes a block the first time one of its rows is
read. Rows are in the order the planner saw
its exposures, so the rows of a visit or an observation are neighbours.

``blocks`` is any sequence: the list itself when the body is JSON in
memory, or doers/planner_snapshots.py's reader, which decompresses and
parses one stored block when asked. A block that cannot be read (or whose
rows its ``finish`` refuses) raises ``SnapshotInvalid``; ``check_all``
reads every block at once (a restore from a body in memory does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from calstream.daemon.deciders.snapshot_columns import decode_column
from calstream.steps.failures import error_text

BLOCK_ROWS = 1000


class SnapshotInvalid(ValueError):
    """A snapshot that cannot be restored; the reason says why."""


# What reading a record its own snapshot could not have made raises (a
# forged body whose sha256 was made to match): every reader of a snapshot's
# contents turns these into SnapshotInvalid, and the planner rebuilds.
UNREADABLE = (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError)


class BlockedColumn:
    """Rows ``0 .. length-1`` of a column stored as blocks; ``column[row]``
    decodes the row's block once (then keeps it) and returns the row.
    ``finish(row, value)`` checks or completes a row as its block is read;
    ``source`` is what a restore says of the column's rows (their headers,
    for deciders/snapshot_reuse.py)."""

    __slots__ = ("_blocks", "_numbers", "_decoded", "_finish", "length", "source")

    def __init__(self, blocks: Sequence, numbers: Any, length: int,
                 finish: Callable[[int, Any], Any] | None = None) -> None:
        if type(numbers) is not list or len(numbers) != -(-length // BLOCK_ROWS) or not all(
                type(n) is int and 0 <= n < len(blocks) for n in numbers):
            raise SnapshotInvalid("a column's blocks are not the blocks of its rows")
        self._blocks, self._numbers, self.length = blocks, numbers, length
        self._decoded: dict[int, list] = {}
        self._finish = finish
        self.source: Any = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, row: int) -> Any:
        n, i = divmod(row, BLOCK_ROWS)
        rows = self._decoded.get(n)
        if rows is None:
            rows = self._decode(n)
        return rows[i]

    def __iter__(self):
        return (self[row] for row in range(self.length))

    def _decode(self, n: int) -> list:
        first = n * BLOCK_ROWS
        expected = min(BLOCK_ROWS, self.length - first)
        try:
            rows = decode_column(self._blocks[self._numbers[n]])
            if len(rows) != expected:
                raise ValueError(f"{len(rows)} rows, not {expected}")
            if self._finish is not None:
                rows = [self._finish(first + i, v) for i, v in enumerate(rows)]
        except SnapshotInvalid:
            raise
        except UNREADABLE as exc:
            raise SnapshotInvalid(f"snapshot block {self._numbers[n]} unreadable: "
                                  f"{error_text(exc)}") from None
        # Two threads may both decode a block (the planner, a snapshot's
        # encoder): the same rows either way, and one assignment wins.
        self._decoded[n] = rows
        return rows

    def check_all(self) -> None:
        for n in range(len(self._numbers)):
            if n not in self._decoded:
                self._decode(n)

    def stored(self, n: int) -> Any:
        """Block ``n`` as the file stores it (a snapshot_reuse.Stored), for a
        new snapshot to write as it is; None for blocks given in memory."""
        stored = getattr(self._blocks, "stored", None)
        return stored(self._numbers[n]) if stored is not None else None


class Pending:
    """A row of a BlockedColumn not read yet, as a restored record's part:
    taking a snapshot passes it on (its encoder reads it, in its thread)
    rather than reading every block on the planner's loop."""

    __slots__ = ("column", "row")

    def __init__(self, column: BlockedColumn, row: int) -> None:
        self.column, self.row = column, row

    def __eq__(self, other: object) -> bool:
        return value(self) == value(other)

    __hash__ = None  # type: ignore[assignment]


def value(x: Any) -> Any:
    """``x``, or the row it stands for if it is Pending."""
    return x.column[x.row] if type(x) is Pending else x
