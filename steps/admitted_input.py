"""Is the file a worker is about to calibrate still the one its arrival names?

An arrival names an inbox file by path and digest, and the admission checks
the digest, but the run waits for a worker after that (behind the runs
ahead of it: minutes at full frame), and the worker opens whatever the path
holds by then. A file replaced in that time by other bytes under the same
name (another exposure's, or a corrected redelivery's) was calibrated and
published under the arrival's name and digest. So the worker checks the
file before the run and again after it (jwst may read it at any moment in
between): its stat signature, when it is the one the admission read the
digest under (no second read of the file), or else its digest.

A file's signature (size, mtime, inode, ctime) changes with every write or
replacement of it: a rename puts another inode there, and a write, or a
``touch``, moves the ctime, which only the kernel sets. A file merely
touched has another signature and the same digest: it is calibrated.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from calstream.steps.fitsfile import file_digest

Sig = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns
NOT_A_FILE = -1  # a Sig's size for a FIFO, socket, device or directory named like a file


class InputChanged(ValueError):
    """The input no longer holds the admitted bytes: a data fault (a
    ValueError: ``permanent``), never retried. Its new content, if it is a
    delivery, is judged at the door as an arrival of its own."""


def stat_sig(st: os.stat_result) -> Sig:
    """A regular file's stat; anything else (a FIFO, a socket, a device, a
    directory named like an exposure) gets size NOT_A_FILE, which the inbox
    rejects: reading a FIFO would block, and none of them is a delivery."""
    size = st.st_size if stat.S_ISREG(st.st_mode) else NOT_A_FILE
    return (size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def check_admitted(path: str | os.PathLike[str], digest: str,
                   signature: Sequence[int] | None = None) -> Sig:
    """The signature of ``path`` while it holds the bytes of ``digest``.
    ``signature``: one under which those bytes were read already (the
    admission's); the file is hashed only when it has another. Raises
    InputChanged, or the OSError of a file that is gone (FileNotFoundError:
    a permanent failure of the input, steps/failures.py)."""
    before = stat_sig(os.stat(path))
    if signature is not None and tuple(signature) == before and before[0] != NOT_A_FILE:
        return before
    if before[0] == NOT_A_FILE:
        raise InputChanged(f"{Path(path).name}: the input is no longer a regular file: "
                           "not calibrated")
    found = file_digest(path)
    if found != digest:
        raise InputChanged(f"{Path(path).name}: the input changed since it was admitted "
                           f"(admitted {digest}, now {found}): not calibrated; new content is "
                           "judged at the door as an arrival of its own")
    if stat_sig(os.stat(path)) != before:
        raise InputChanged(f"{Path(path).name}: the input changed while it was checked "
                           f"(admitted {digest}): not calibrated")
    return before
