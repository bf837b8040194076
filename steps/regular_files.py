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

Where calstream writes one of its files, something else in its place (a
directory a person made, a FIFO, a link) made every write raise, and the
daemon's start retried it for ever. Such a thing is moved aside once, to
``<name>.unreadable-<UTC time>`` (``set_aside_unless_regular``; a directory
expected where a file lies: ``directory_in_place``), with a warning naming
both paths, and the file is written anew: nothing is deleted, a person can
look at it later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("calstream.files")

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
    try:
        # Judged before a file object is made: ``open(fd)`` of a directory
        # raised IsADirectoryError naming the descriptor ("8"), not the path.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(f"{path}: not a regular file (a FIFO, socket, device or "
                                  "directory): not read")
        if limit is not None and st.st_size > limit:
            raise NotARegularFile(f"{path}: {st.st_size} bytes, more than the {limit} "
                                  "read of such a file: not read")
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb", closefd=True)  # noqa: SIM115 - handed to the caller, open


def read_regular_file(path: str | Path, *, limit: int | None = RECORD_LIMIT) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes
    (``open_regular_file``)."""
    with open_regular_file(path, limit=limit) as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:  # grew while it was read
        raise NotARegularFile(f"{path}: grew while read, more than the {limit} bytes "
                              "read of such a file: not read")
    return data


def read_regular_text(path: str | Path, *, limit: int | None = RECORD_LIMIT) -> str:
    """``read_regular_file`` decoded as UTF-8 (a UnicodeDecodeError, a
    ValueError, for bytes that are not)."""
    return read_regular_file(path, limit=limit).decode("utf-8")


# -- a file written afresh ----------------------------------------------------

def open_new(path: str | Path, *, binary: bool = False):
    """``path`` created anew for writing, in the directory named, as a file
    of its own: whatever is at the name is removed first and the file is
    opened with ``O_EXCL | O_NOFOLLOW``. calstream's temporaries have
    names anyone can work out (``.<name>.<pid>.tmp``), and a link someone
    put at one took the write wherever it pointed, out of the store or the
    work directory. A directory there raises, as ``open`` did."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    return os.fdopen(fd, "wb" if binary else "w")


# -- something else where a file or a directory of calstream's goes ------------

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISREG, "a regular file"))


def kind_of(mode: int) -> str:
    """What an ``lstat`` mode is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "no file calstream knows")


def aside_name(name: str, when: float) -> str:
    """The name something unusable called ``name`` is moved to: the UTC time
    says when it was found (a local time is ambiguous across a DST change)."""
    return f"{name}.unreadable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(when))}"


def move_aside(path: str | Path, *, what: str, why: str, companions: Sequence[str] = ()) -> Path:
    """Rename ``path`` (and each ``<path><suffix>`` of ``companions`` that
    exists: a database's journal, say) to a free ``aside_name`` next to it,
    with a warning naming both. Returns where it went; an OSError of the
    rename is raised (the caller's write would have failed the same way)."""
    path = Path(path)
    base = path.with_name(aside_name(path.name, time.time()))
    aside, n = base, 0
    while os.path.lexists(aside):  # found twice in a second: never over an earlier one
        n += 1
        aside = base.with_name(f"{base.name}.{n}")
    os.rename(path, aside)
    for suffix in companions:
        if os.path.lexists(f"{path}{suffix}"):
            os.rename(f"{path}{suffix}", f"{aside}{suffix}")
    log.warning("%s %r %s: moved aside to %r", what, str(path), why, str(aside))
    return aside


def set_aside_unless_regular(path: str | Path, *, what: str) -> Path | None:
    """``path`` made free for a regular file: whatever else is there (a
    directory, a FIFO, a link: calstream makes none of them at its files'
    names, and a link would take the write elsewhere) is moved aside.
    Returns where it went, or None when nothing had to move."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (or no directory above)
        return None
    if stat.S_ISREG(mode):
        return None
    return move_aside(path, what=what, why=f"is {kind_of(mode)}, not a regular file")


def directory_in_place(path: str | Path, *, root: str | Path, what: str) -> Path:
    """``path`` made a directory, with those between ``root`` and it: each
    one that is something else (a file) is moved aside first, where
    ``mkdir`` raised FileExistsError or NotADirectoryError. A link to a
    directory is taken as the directory (a person may put one elsewhere)."""
    path, root = Path(path), Path(root)
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break  # made below, with everything under it
        if not (stat.S_ISDIR(mode) or (stat.S_ISLNK(mode) and current.is_dir())):
            move_aside(current, what=what, why=f"is {kind_of(mode)}, not a directory")
            break
    path.mkdir(parents=True, exist_ok=True)
    return path
