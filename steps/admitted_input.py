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

An inbox is cleaned: an archiver moves or deletes an uncal file once
detector1 has it, sometimes while the run still goes. A name gone after the
run says nothing of what the run read, so the worker pins the input
(``PinnedInput``): it opens the file, checks the open file's bytes, and
hands jwst a name of its own that leads to that open file
(``/proc/<pid>/fd/<n>``, linked under the input's own name in a private
directory), so every read of jwst's is of the checked bytes whatever
happens to the inbox name. After the run the open file must still hold
them (its signature, else its digest: the open file is hashed even when
no name leads to it any more), and a name still there must still be that
file: other bytes under the name (a replacement during the run) are a
refusal, as before; no name is not (docs/design.md, "Stale arrivals").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from calstream.steps.fitsfile import file_digest

Sig = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns
Identity = tuple[int, int]  # device, inode: which file a name or an open file is
NOT_A_FILE = -1  # a Sig's size for a FIFO, socket, device or directory named like a file
# Where Linux names each open file of a process: opening one of these opens
# that very file, with or without a name in a directory.
OPEN_FILES = "/proc/{pid}/fd/{fd}"

# What the check after the run found (``after_run``).
UNCHANGED = "unchanged"  # the open file's signature is the one checked before the run
HASH = "hash"  # its signature moved (a write, a touch, its name unlinked): its bytes decide
REPLACED = "replaced"  # the name leads to another file now


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
    _same_size(path, digest, signature, before)
    found = file_digest(path)
    if found != digest:
        raise InputChanged(f"{Path(path).name}: the input changed since it was admitted "
                           f"(admitted {digest}, now {found}): not calibrated; new content is "
                           "judged at the door as an arrival of its own")
    if stat_sig(os.stat(path)) != before:
        raise InputChanged(f"{Path(path).name}: the input changed while it was checked "
                           f"(admitted {digest}): not calibrated")
    return before


def _same_size(path: str | os.PathLike[str], digest: str, signature: Sequence[int] | None,
               now: Sig) -> None:
    """Bytes of another size than those admitted cannot be them: refused
    without hashing them (a sparse file of 200 GB put under the name held
    the worker for minutes, hashing its hole, before it was refused)."""
    if signature is not None and signature[0] != now[0]:
        raise InputChanged(f"{Path(path).name}: the input changed since it was admitted "
                           f"(admitted {digest}, {signature[0]} bytes; now {now[0]} bytes): "
                           "not calibrated; new content is judged at the door as an arrival "
                           "of its own")


def after_run(pinned: Sig, held: Sig, own: Identity, named: Identity | None) -> str:
    """What the pinned input's state after the run means (pure): ``pinned``
    the open file's signature when it was checked before the run, ``held``
    its signature now, ``own`` its device and inode, ``named`` those of what
    the input's name leads to now (None: no file by that name any more).

    jwst read the open file, so a name gone changes nothing; a name leading
    to another file is a replacement during the run, refused as one before
    it is. An unlink moves the open file's ctime (its link count changed),
    as a write or a touch does: those are decided by its bytes."""
    if named is not None and named != own:
        return REPLACED
    return UNCHANGED if held == pinned else HASH


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino)


class PinnedInput:
    """The input held open from its check before the run to its check after
    it (see the module's docstring). ``name``: what jwst is to open (inside
    ``scratch``, a private directory made beside the run's outputs, removed
    on close). Where the system names no open files (no ``/proc``), the
    name is the input's own and the check after the run is ``check_admitted``'s.
    Raises as ``check_admitted`` does; FileNotFoundError: the input was gone
    before the run (a permanent failure of the input, steps/failures.py)."""

    def __init__(self, path: str | os.PathLike[str], digest: str,
                 signature: Sequence[int] | None, scratch: str | os.PathLike[str]) -> None:
        self.path, self.digest = os.fspath(path), digest
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._private: str | None = None
        try:
            self._opened = OPEN_FILES.format(pid=os.getpid(), fd=self._fd)
            if not os.path.exists(self._opened):  # no /proc: the name is all there is
                os.close(self._fd)
                self._fd = -1
                self.pinned = check_admitted(self.path, digest, signature)
                self.name = self.path
                return
            st = os.fstat(self._fd)
            self.own, self.pinned = _identity(st), stat_sig(st)
            self._check(signature)
            self._private = tempfile.mkdtemp(prefix=".input-", dir=scratch)
            self.name = os.path.join(self._private, Path(self.path).name)
            os.symlink(self._opened, self.name)
        except BaseException:
            self.close()
            raise

    def _check(self, signature: Sequence[int] | None) -> None:
        if self.pinned[0] == NOT_A_FILE:
            raise InputChanged(f"{Path(self.path).name}: the input is no longer a regular "
                               "file: not calibrated")
        if signature is not None and tuple(signature) == self.pinned:
            return
        _same_size(self.path, self.digest, signature, self.pinned)
        self._same_bytes("since it was admitted")
        if stat_sig(os.fstat(self._fd)) != self.pinned:
            raise InputChanged(f"{Path(self.path).name}: the input changed while it was "
                               f"checked (admitted {self.digest}): not calibrated")

    def _same_bytes(self, when: str) -> None:
        found = file_digest(self._opened)  # the open file, named or not
        if found != self.digest:
            raise InputChanged(f"{Path(self.path).name}: the input changed {when} "
                               f"(admitted {self.digest}, now {found}): not calibrated; new "
                               "content is judged at the door as an arrival of its own")

    def confirm(self) -> None:
        """After the run: the open file still holds the admitted bytes and
        no other file took the input's name, else InputChanged."""
        if self._fd < 0:
            check_admitted(self.path, self.digest, self.pinned)
            return
        try:
            named = _identity(os.stat(self.path))
        except (FileNotFoundError, NotADirectoryError):
            named = None  # moved or deleted: the run read the open file all the same
        held = stat_sig(os.fstat(self._fd))
        verdict = after_run(self.pinned, held, self.own, named)
        if verdict == REPLACED:
            raise InputChanged(f"{Path(self.path).name}: the input was replaced while it was "
                               f"calibrated (admitted {self.digest}; another file has its "
                               "name now): not calibrated; new content is judged at the "
                               "door as an arrival of its own")
        if verdict == HASH:
            if held[0] != self.pinned[0]:  # another size: not the admitted bytes, unread
                raise InputChanged(f"{Path(self.path).name}: the input changed while it was "
                                   f"calibrated (admitted {self.digest}, {self.pinned[0]} "
                                   f"bytes; now {held[0]} bytes): not calibrated")
            self._same_bytes("while it was calibrated")

    def close(self) -> None:
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PinnedInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_order_inputs(inputs: Sequence[dict]) -> list[Sig]:
    """Each of a work order's inputs (``path``, ``digest``, ``signature``:
    the admission's, or None) while it holds the bytes the order names: their
    signatures, for ``check_order_inputs_after``. A stage-2 or stage-3 run
    also waits for a worker after its admission (and is retried, or parked
    for hours, without a second one), and jwst opens the members by name:
    a product replaced under the same name meanwhile (a redelivery's
    detector1 product, PLANNED where the admitted one was not) was run
    past the pointing gate, which had judged the admitted bytes' header.
    Raises InputChanged (or the OSError of an input gone)."""
    return [check_admitted(i["path"], i["digest"], i.get("signature")) for i in inputs]


def check_order_inputs_after(inputs: Sequence[dict], before: Sequence[Sig]) -> None:
    """After the run: each input still holds the bytes checked before it
    (its signature unchanged, else its digest), or InputChanged: jwst may
    have read another file's bytes in between."""
    for item, signature in zip(inputs, before, strict=True):
        if stat_sig(os.stat(item["path"])) != signature:
            check_admitted(item["path"], item["digest"])
