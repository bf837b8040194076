"""The planner's snapshot file: written atomically, read back only if whole.

``<work_dir>/planner/snapshot.json`` is one line of envelope (JSON: format,
calstream version, when it was taken, the topic offsets it covers, the
size and sha256 of the body), a newline, then the body
(deciders/planner_snapshot.py). It is written to a temporary file, synced
and renamed, so a crash leaves the previous snapshot or the new one, never
a part. ``read`` returns None -- with one warning saying why -- for a
snapshot that is missing, of another format or calstream version, older
than ``max_age``, or corrupt (size, digest, JSON); the planner then
rebuilds from the topics. Deleting the file is always safe: it only makes
the next start slower.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import calstream
from calstream.daemon.doers.product_store import fsync_dir

log = logging.getLogger("calstream.planner")

FORMAT = 1
MAX_AGE = 7 * 24 * 3600.0  # older than this, the tail to read is as long as a rebuild


def snapshot_path(work_dir: str | Path) -> Path:
    return Path(work_dir) / "planner" / "snapshot.json"


@dataclass(frozen=True)
class Snapshot:
    body: Any
    offsets: dict[tuple[str, int], int]  # (topic, partition) -> next offset to read
    taken_at: float
    size: int


def write(work_dir: str | Path, body: dict[str, Any], *,
          offsets: dict[tuple[str, int], int], calstream_version: str | None = None) -> int:
    """Write the snapshot; returns its size in bytes."""
    data = json.dumps(body, separators=(",", ":")).encode()
    envelope = {"format": FORMAT, "calstream_version": calstream_version or calstream.__version__,
                "taken_at": time.time(), "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())]}
    path = snapshot_path(work_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(envelope).encode() + b"\n")
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return len(data)


def read(work_dir: str | Path, *, max_age: float | None = MAX_AGE,
         calstream_version: str | None = None) -> Snapshot | None:
    """The snapshot, or None (and one warning) when it cannot be trusted."""
    path = snapshot_path(work_dir)
    try:
        with open(path, "rb") as f:
            head = f.readline(64 * 1024)
            data = f.read()
    except FileNotFoundError:
        log.info("planner: no snapshot at %s: rebuilding from the topics", path)
        return None
    except OSError as exc:
        return _ignored(path, f"unreadable ({exc})")
    try:
        envelope = json.loads(head)
        if not isinstance(envelope, dict):
            raise ValueError("the envelope is not an object")
        offsets = {(str(t), int(p)): int(o) for t, p, o in envelope["offsets"]}
        taken_at = float(envelope["taken_at"])
        # A reader seeks to these: a negative one would stop the planner.
        if any(p < 0 or o < 0 for (_, p), o in offsets.items()) or not math.isfinite(taken_at):
            raise ValueError("an offset, partition or time that cannot be")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return _ignored(path, f"its envelope cannot be read ({exc})")
    expected_version = calstream_version or calstream.__version__
    if envelope.get("format") != FORMAT:
        return _ignored(path, f"format {envelope.get('format')!r}, this planner reads {FORMAT}")
    if envelope.get("calstream_version") != expected_version:
        return _ignored(path, f"written by calstream {envelope.get('calstream_version')}, "
                              f"this is {expected_version}")
    if max_age is not None and time.time() - taken_at > max_age:
        return _ignored(path, f"taken {(time.time() - taken_at) / 3600:.1f} h ago "
                              f"(more than {max_age / 3600:.0f} h)")
    if len(data) != envelope.get("size") or \
            hashlib.sha256(data).hexdigest() != envelope.get("sha256"):
        return _ignored(path, "its size or sha256 is not what its envelope says (corrupt)")
    try:
        body = json.loads(data)
    except ValueError as exc:
        return _ignored(path, f"its body is not JSON ({exc})")
    return Snapshot(body, offsets, taken_at, len(data))


def _ignored(path: Path, why: str) -> None:
    log.warning("planner: snapshot %s ignored, %s: rebuilding from the topics", path, why)
    return None
