"""A second look after an I/O error: a sick mount, or a damaged file?

EIO says only that a read or write failed below the file system. A file
whose blocks are damaged reads so, for good; so does every file of a network
mount whose server is away (an NFS server rebooting under a soft mount, a
FUSE daemon stalled), until it is back. As one "transient" fault, a long
outage retried a few times dead-lettered every exposure it touched
``retries_exhausted``, though nothing was wrong with any of them.

So the worker looks again, once, at the places the run used, in its own
``except`` (steps/reference_integrity.classify_run_failure): each directory
is opened and its first entry read, and a scratch directory is written to
(a file made and removed: on NFS a create always goes to the server, where
a stat may be answered from the attribute cache). The file the error named
is not read again: its damage would fail that look too. Any look failing
with an OSError: the mount does not serve, and the run's failure is the
mount's (``mount_gone``: parked, tried again until it serves). Every look
answering: the mount serves, so the error was the file's own, and it stays
what it was (transient: retried a few times, then dead-lettered; permanent
when a step raised its own error over it: dead-lettered).

A permission error is looked at the same way by the inbox's door, one step
further: a file this user may not open while its neighbours open is the
file's (a delivery made with the wrong mode); when every neighbour looked
at refuses too, the mount is at fault (an NFS id mapping lost, a volume
mounted with the wrong owner), which no file's quarantine fixes. Before,
each file of such a mount was quarantined as unreadable, one by one.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from calstream.steps.failures import (
    INFRASTRUCTURE,
    MOUNT_GONE,
    PERMANENT,
    TRANSIENT,
    causes,
    error_text,
    infrastructure_cause,
)

log = logging.getLogger("calstream.files")

PROBE = ".calstream-mount-probe"
MAX_PLACES = 8  # an association's members share a few directories
NEIGHBOURS = 3  # files opened beside one refused: any one opening clears the mount


def io_error(exc: BaseException) -> OSError | None:
    """The EIO behind ``exc`` (itself or what it was raised from), or None."""
    for e in (exc, *causes(exc)):
        if isinstance(e, OSError) and e.errno == errno.EIO and type(e).__name__ != "SSLError":
            return e
    return None


def run_places(task: dict, error: OSError) -> tuple[list[Path], list[Path]]:
    """The directories a run read from and the directory it wrote to (its
    scratch), from its task's arguments and the error's file names."""
    files = [error.filename, error.filename2, task.get("input_path")]
    association = task.get("association")
    if isinstance(association, dict):
        files += [m.get("expname") for p in association.get("products") or ()
                  if isinstance(p, dict) for m in p.get("members") or () if isinstance(m, dict)]
    read = [Path(os.fsdecode(f)).parent for f in files if isinstance(f, str | bytes)]
    written = [Path(task["output_dir"])] if isinstance(task.get("output_dir"), str) else []
    return list(dict.fromkeys(p for p in read if p.is_absolute()))[:MAX_PLACES], written


def sick_mount(read: Iterable[Path], written: Iterable[Path],
               refused: Path | None = None) -> tuple[Path, OSError] | None:
    """The first look that failed (the directory and its error), or None:
    each answered. A directory gone or closed to this user says nothing of
    the mount (an input withdrawn, an inbox without read permission).
    ``refused``: a file this user could not open; in its directory up to
    NEIGHBOURS other files are opened, and their refusing too is a failed
    look (none there to open: the file's own, as before)."""
    for directory in read:
        try:
            with os.scandir(directory) as entries:
                if refused is not None and directory == refused.parent:
                    if (exc := _neighbours_refuse(entries, refused.name)) is not None:
                        return directory, exc
                else:
                    next(entries, None)
        except (FileNotFoundError, PermissionError):
            continue
        except OSError as exc:
            return directory, exc
    for directory in written:
        probe = directory / f"{PROBE}.{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            os.unlink(probe)
        except (FileNotFoundError, PermissionError):
            continue
        except OSError as exc:
            return directory, exc
    return None


def _neighbours_refuse(entries: Iterable[os.DirEntry], name: str) -> PermissionError | None:
    """The permission error of the last of up to NEIGHBOURS regular files
    (not ``name``, not hidden) if each refuses to open; None once one opens,
    or when there is none (an error of another kind says nothing: skipped)."""
    refusal, tried = None, 0
    for entry in entries:
        if tried >= NEIGHBOURS:
            break
        if entry.name == name or entry.name.startswith("."):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            tried += 1
            os.close(os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
                             | os.O_CLOEXEC))
            return None
        except PermissionError as exc:
            refusal = exc
        except OSError:
            continue
    return refusal


def after_io_error(kind: str, exc: BaseException, task: dict,
                   also: Iterable[Path] = ()) -> str:
    """``kind`` once the second look is made for a failure with an EIO
    behind it (transient as an OSError, permanent when a step raised its
    own error over it): ``infrastructure:mount_gone`` when a look fails (or
    the store's own fault, a full or read-only disk, if that is what the
    look met), else ``kind`` as it was. ``also``: more directories the run
    read from (the CRDS cache's references: a read on an open reference
    names no file)."""
    error = io_error(exc) if kind in (TRANSIENT, PERMANENT) else None
    if error is None:
        return kind
    read, written = run_places(task, error)
    found = sick_mount([*read, *also], written)
    if found is None:
        return kind
    directory, why = found
    cause = infrastructure_cause(why) or MOUNT_GONE
    log.warning("an I/O error failed the run (%s), and %s does not answer a second look (%s): "
                "the mount's fault (%s), not the file's; parked until it serves",
                error_text(error, 300), directory, error_text(why, 300), cause)
    return f"{INFRASTRUCTURE}:{cause}"
