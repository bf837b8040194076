"""Simulated downlink: files arrive in an inbox the way a transfer delivers them.

A file may arrive in pieces (a watcher sees it grow, incomplete, between
pieces) or under a dot-prefixed temporary name that is renamed once complete
(the rename is atomic: a watcher never sees a partial file under the real name).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path


def _pieces(size: int, pieces: int) -> list[tuple[int, int]]:
    pieces = max(1, min(pieces, size)) if size else 1
    bounds = [size * i // pieces for i in range(pieces + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def deliver_one(
    source: str | Path,
    inbox: str | Path,
    *,
    pieces: int = 1,
    piece_delay: float = 0.0,
    temp_then_rename: bool = False,
) -> Path:
    """Copy one file into `inbox`; return its final path."""
    source = Path(source)
    final = Path(inbox) / source.name
    target = final.with_name(f".{source.name}.part") if temp_then_rename else final
    data = source.read_bytes()
    with target.open("wb") as fh:
        for n, (start, end) in enumerate(_pieces(len(data), pieces)):
            if n and piece_delay:
                time.sleep(piece_delay)
            fh.write(data[start:end])
            fh.flush()  # each piece is visible to a watcher as it lands
        os.fsync(fh.fileno())
    if temp_then_rename:
        os.replace(target, final)
    return final


def deliver(
    files: Iterable[str | Path],
    inbox: str | Path,
    *,
    interval: float = 0.0,
    pieces: int = 1,
    piece_delay: float = 0.0,
    temp_then_rename: bool = False,
) -> list[Path]:
    """Copy `files` into `inbox` in order, `interval` seconds apart; return final paths.

    Blocking; from async code run it in a worker thread, e.g.
    ``await anyio.to_thread.run_sync(functools.partial(deliver, files, inbox, interval=1))``.
    """
    Path(inbox).mkdir(parents=True, exist_ok=True)
    delivered = []
    for n, source in enumerate(files):
        if n and interval:
            time.sleep(interval)
        delivered.append(
            deliver_one(
                source,
                inbox,
                pieces=pieces,
                piece_delay=piece_delay,
                temp_then_rename=temp_then_rename,
            )
        )
    return delivered
