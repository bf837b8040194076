"""Reading a small file another party may have placed: only a regular file,
only up to a bound.

calstream's records (provenance records, claims, the planner's ledger, the
deployment record, promotion records, scratch owners, the snapshot) live in
directories other daemons and people can write. ``Path.read_text`` on a FIFO
put where a record was expected waits for a writer for ever, and on a link to
``/dev/zero`` reads until memory runs out: one such name stopped the thread
that read it (a work item's lookup, the planner's start, every CLI command),
and a few of them the thread pool the event loop hands its file work to. So
the file is opened without waiting (``O_NONBLOCK``: a FIFO opens at once),
judged by what it is (``fstat``), and read only if it is a regular file no
larger than the bound.

Refusals are an OSError (``NotARegularFile``) with no errno: the readers
already take an OSError as "unreadable, none" and go on, and no errno means
no infrastructure cause (steps/failures.infrastructure_cause), so nothing
parks or retries for a file that will not change by waiting.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

# calstream's own records are kilobytes; a deployment's largest (a provenance
# record of an association with hundreds of members) well under this.
RECORD_LIMIT = 16 << 20


class NotARegularFile(OSError):
    """Not read: a FIFO, socket, device or directory, or larger than the bound."""


def open_regular_file(path: str | Path, *, limit: int | None = None) -> BinaryIO:
    """``path`` opened for reading if it is a regular file of at most ``limit``
    bytes (None: no bound). Raises FileNotFoundError and the other OSErrors
    of open as they are, NotARegularFile for what this refuses."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    f = open(fd, "rb", closefd=True)  # noqa: SIM115 - handed to the caller, open
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(f"{path}: not a regular file (a FIFO, socket, device or "
                                  "directory): not read")
        if limit is not None and st.st_size > limit:
            raise NotARegularFile(f"{path}: {st.st_size} bytes, more than a record's "
                                  f"{limit}: not read")
    except BaseException:
        f.close()
        raise
    return f


def read_regular_file(path: str | Path, *, limit: int | None = RECORD_LIMIT) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes
    (``open_regular_file``)."""
    with open_regular_file(path, limit=limit) as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:  # grew while it was read
        raise NotARegularFile(f"{path}: more than a record's {limit} bytes: not read")
    return data


def read_regular_text(path: str | Path, *, limit: int | None = RECORD_LIMIT) -> str:
    """``read_regular_file`` decoded as UTF-8 (a UnicodeDecodeError, a
    ValueError, for bytes that are not)."""
    return read_regular_file(path, limit=limit).decode("utf-8")
