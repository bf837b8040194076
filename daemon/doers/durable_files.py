"""Files written durably: a record replaced atomically, files and renames
synced. Shared by the product store, the planner's ledger and its markers.

A record's name is untrusted like its content: a directory, a FIFO or a
link found where the record goes is moved aside first
(steps/regular_files.py), where the rename over it raised at every try.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from calstream.steps.regular_files import directory_in_place, open_new, set_aside_unless_regular


def write_json_atomically(path: Path, value: Any, *, what: str = "record",
                          root: Path | None = None, sync: bool = True) -> None:
    """``path`` holds ``value`` or what it held before, never a part (durably,
    unless ``sync`` is False: what a lost machine may lose). ``what`` names
    the record in a warning; ``root``: the directories from it down to
    ``path`` are made, each that is a file moved aside."""
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        directory_in_place(path.parent, root=root, what=f"the directory of a {what}")
    set_aside_unless_regular(path, what=what)
    tmp = temporary_path(path)
    try:
        with open_new(tmp) as f:
            json.dump(value, f, indent=1, sort_keys=True)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a part left on a full disk would keep it full
        raise
    if sync:
        fsync_dir(path.parent)


# ".<name>.<pid>.tmp": the writer's pid in the name, so that two processes
# never write one temporary, and one left by a killed writer can be told.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>[1-9][0-9]{0,9})\.tmp")


def temporary_path(path: Path) -> Path:
    """Where this process writes ``path``'s next content before renaming it there."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def temporary_of(name: str) -> tuple[str, int] | None:
    """(the name it was to replace, the writer's pid) of a temporary named as
    ``temporary_path`` names them, or None. A writer killed between writing
    and renaming (kill -9, a power cut) leaves it behind."""
    m = _TEMPORARY.fullmatch(name)
    return (m["name"], int(m["pid"])) if m else None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def syncing(paths: list[Path]):
    """Every file of ``paths`` made durable by the end of the block, their
    fsyncs started at once in threads: the block (hashing them, say) runs
    while the disk writes them back, and the disk gets them together rather
    than one after another. Two 96 MB full-frame products: 0.38 s instead of
    0.66 s to hash and sync (issue 15). An fsync's OSError is raised at the
    end of the block."""
    if not paths:
        yield
        return
    with ThreadPoolExecutor(max_workers=min(8, len(paths)),
                            thread_name_prefix="fsync") as threads:
        pending = [threads.submit(_fsync, p) for p in paths]
        yield
        for done in pending:
            done.result()


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; best effort where directories cannot be opened."""
    with contextlib.suppress(OSError):
        _fsync(path)
