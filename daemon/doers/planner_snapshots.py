"""The planner's snapshot file: written atomically, read back only if whole.

``<work_dir>/planner/snapshot.json`` is one line of envelope (JSON: format,
calstream version, when it was taken, the topic offsets it covers, the
size and sha256 of what follows, the sizes of its parts stored and
decompressed), a newline, then the body (deciders/planner_snapshot.py)
without its ``blocks``, then each block on its own: JSON, compressed with
zlib (level 1: a million events' body compresses 3-4 times in a few
seconds; a higher level gains a few percent for twice the time). A block
whose rows did not change since the last snapshot is written as that
one stored it (deciders/snapshot_reuse.py), bytes for bytes. The body
is read at start; a block is decompressed and parsed when the restored
state first reads one of its rows (deciders/snapshot_blocks.py), so a
restart reads a million events' snapshot in seconds; the blocks stay in
memory compressed until then. Only JSON is ever read from it, never code
(no pickle), and decompression stops at the size the envelope states. It is written to a temporary file, synced
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
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import calstream
from calstream.daemon.deciders.snapshot_columns import collector_paused
from calstream.daemon.deciders.snapshot_reuse import Stored
from calstream.daemon.doers.child_processes import pid_alive
from calstream.daemon.doers.durable_files import fsync_dir, temporary_of, temporary_path
from calstream.steps.regular_files import (
    directory_in_place,
    open_new,
    open_regular_file,
    set_aside_unless_regular,
)

log = logging.getLogger("calstream.planner")

FORMAT = 3  # 1: the body as plain JSON; 2: the body with its blocks, one stream
MAX_AGE = 7 * 24 * 3600.0  # older than this, the tail to read is as long as a rebuild
SNAPSHOT = "planner snapshot"
HEAD_READ = 64 * 1024  # of the envelope's line, at most (a longer one is no envelope)


def snapshot_path(work_dir: str | Path) -> Path:
    return Path(work_dir) / "planner" / "snapshot.json"


@dataclass(frozen=True)
class Snapshot:
    body: Any
    offsets: dict[tuple[str, int], int]  # (topic, partition) -> next offset to read
    taken_at: float
    size: int
    # (topic, partition) -> the fingerprint of the last record read there
    # (``fingerprint``): the offsets are places on the broker it was taken on.
    covered: dict[tuple[str, int], str] = field(default_factory=dict)


def fingerprint(value: bytes | None) -> str:
    """What tells a record at a place from another one there (its bytes' hash)."""
    return hashlib.sha256(value or b"").hexdigest()[:32]


def write(work_dir: str | Path, body: dict[str, Any], *,
          offsets: dict[tuple[str, int], int], calstream_version: str | None = None,
          stored: list[Stored] | None = None, topic_prefix: str | None = None,
          covered: dict[tuple[str, int], str] | None = None) -> int:
    """Write the snapshot; returns its size in bytes (``pack``, then ``put``)."""
    return put(work_dir, pack(body, offsets=offsets, calstream_version=calstream_version,
                              stored=stored, topic_prefix=topic_prefix, covered=covered))


@dataclass(frozen=True)
class Packed:
    """A snapshot ready to write: the compressed body and blocks, its envelope."""
    data: bytes
    envelope: dict[str, Any]

    @property
    def head(self) -> bytes:
        """The first line (``Found.head``): names this snapshot alone (sha256, time)."""
        return json.dumps(self.envelope).encode() + b"\n"


def pack(body: dict[str, Any], *, offsets: dict[tuple[str, int], int],
         calstream_version: str | None = None, stored: list[Stored] | None = None,
         topic_prefix: str | None = None,
         covered: dict[tuple[str, int], str] | None = None) -> Packed:
    """The snapshot as written, in memory (compressing: CPU, no I/O). A block that is a
    ``Stored`` (reused from the last snapshot: deciders/snapshot_reuse.py)
    is written as it is; every block as written is appended to ``stored``.
    ``topic_prefix``: the deployment whose topics it is the state of (``read``).
    ``covered``: the fingerprints of the last records read (``Snapshot.covered``)."""
    blocks = body.get("blocks") if isinstance(body, dict) else None
    if type(blocks) is list:
        body = {k: v for k, v in body.items() if k != "blocks"}
    deflate, parts, raw_size = zlib.compressobj(1), [], 0
    for piece in _json_pieces(body):  # never the whole text at once: it can be gigabytes
        raw_size += len(piece)
        parts.append(deflate.compress(piece))
    parts.append(deflate.flush())
    sizes = []  # of each block: (stored, decompressed)
    for block in blocks if type(blocks) is list else ():
        if type(block) is not Stored:
            text = json.dumps(block, separators=(",", ":")).encode()
            block = Stored(zlib.compress(text, 1), len(text))
        parts.append(block.data)
        sizes.append([len(block.data), block.raw_size])
        if stored is not None:
            stored.append(block)
    data = b"".join(parts)
    del parts
    return Packed(data, {
        "format": FORMAT, "calstream_version": calstream_version or calstream.__version__,
        "taken_at": time.time(), "size": len(data), "raw_size": raw_size,
        "blocks": sizes if type(blocks) is list else None,
        "sha256": hashlib.sha256(data).hexdigest(), "topic_prefix": topic_prefix,
        "offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())],
        "covered": [[t, p, h] for (t, p), h in sorted((covered or {}).items())]})


def put(work_dir: str | Path, packed: Packed) -> int:
    """``packed`` written as the snapshot (atomically); its size. Only the
    file's I/O, so that it can be timed as such (planner_restore.py)."""
    data, path = packed.data, snapshot_path(work_dir)
    # A file at <work>/planner, a directory at the snapshot's name: moved
    # aside, where every snapshot raised (FileExistsError, IsADirectoryError).
    directory_in_place(path.parent, root=Path(work_dir), what="the planner's directory")
    set_aside_unless_regular(path, what=SNAPSHOT)
    _remove_killed_writers_parts(path)
    tmp = temporary_path(path)
    try:
        with open_new(tmp, binary=True) as f:
            f.write(packed.head)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a part of a snapshot on a full disk keeps it full
        raise
    fsync_dir(path.parent)
    return len(data)


def _remove_killed_writers_parts(path: Path) -> None:
    """The temporaries of ``path`` whose writer is gone: a planner killed
    between writing and renaming (kill -9; an OOM kill, likely then: a
    snapshot is written when it is over its memory budget) left a whole
    snapshot's size there, and its successor, another pid, never wrote that
    name again, so each such kill left one more until the disk was full. A
    live writer's (a pid reused since: pid_alive cannot tell) is left."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return  # the write below says what is wrong with the directory
    for name in names:
        if (leftover := temporary_of(name)) is None or leftover[0] != path.name \
                or pid_alive(leftover[1]):
            continue
        try:
            (path.parent / name).unlink()
        except OSError as exc:  # gone already, a directory there, a read-only disk
            if not isinstance(exc, FileNotFoundError):
                log.warning("planner: %s, the part of a snapshot a killed planner (pid %d) "
                            "left, cannot be removed: %s", path.parent / name, leftover[1], exc)
            continue
        log.info("planner: removed %s, the part of a snapshot whose writer (pid %d) was "
                 "killed while writing it", path.parent / name, leftover[1])


def _json_pieces(value: Any, depth: int = 4) -> Iterator[bytes]:
    """``value`` as compact JSON, in pieces of at most a few megabytes: big
    dicts and lists are written item by item (long lists a slice at a time)."""
    if depth and type(value) is dict and value and all(type(k) is str for k in value):
        sep = b"{"
        for key, item in value.items():
            yield sep + json.dumps(str(key)).encode() + b":"
            yield from _json_pieces(item, depth - 1)
            sep = b","
        yield b"}"
    elif depth and type(value) is list and len(value) > _SLICE:
        yield b"["
        for start in range(0, len(value), _SLICE):
            text = json.dumps(value[start:start + _SLICE], separators=(",", ":")).encode()
            yield (b"," if start else b"") + text[1:-1]
        yield b"]"
    else:
        yield json.dumps(value, separators=(",", ":")).encode()


_SLICE = 20_000


def read(work_dir: str | Path, *, max_age: float | None = MAX_AGE,
         calstream_version: str | None = None, topic_prefix: str | None = None
         ) -> Snapshot | None:
    """The snapshot, or None (and one warning) when it cannot be trusted.

    ``topic_prefix`` (None: not asked, as for a benchmark's files): the
    snapshot must be of this deployment's topics. One of another (a work dir
    restored from another's backup, copied from staging, a deployment given
    a new prefix) is a state decided on other records: restored, it took this
    deployment's own product events for conflicting copies (dead letters) and
    its orders for sent, and nothing was ordered."""
    found = read_file(work_dir)
    return None if found is None else parse(found, max_age=max_age,
                                            calstream_version=calstream_version,
                                            topic_prefix=topic_prefix)


@dataclass(frozen=True)
class Found:
    """The snapshot file's bytes as read (``read_file``), not yet trusted."""
    path: Path
    head: bytes  # the envelope's line: which snapshot it is (SnapshotFiles.delete)
    data: bytes


def read_file(work_dir: str | Path) -> Found | None:
    """The snapshot file's bytes, or None (and one line) when there is none
    this planner may read. Only the file's I/O, so that it can be timed as
    such (planner_restore.py); ``parse`` says whether they can be trusted."""
    path = snapshot_path(work_dir)
    try:
        set_aside_unless_regular(path, what=SNAPSHOT)  # then: no snapshot, a rebuild
        with open_regular_file(path) as f:  # a FIFO in its place must not hold the start
            if (whose := _not_ours_alone(os.fstat(f.fileno()))) is not None:
                return _ignored(path, whose)
            head = f.readline(HEAD_READ)
            data = f.read()
    except FileNotFoundError:
        log.info("planner: no snapshot at %s: rebuilding from the topics", path)
        return None
    except OSError as exc:
        return _ignored(path, f"unreadable ({exc})")
    return Found(path, head, data)


def parse(found: Found, *, max_age: float | None = MAX_AGE,
          calstream_version: str | None = None, topic_prefix: str | None = None
          ) -> Snapshot | None:
    """``read``'s checks of the bytes ``read_file`` found (CPU, no I/O)."""
    path, head, data = found.path, found.head, found.data
    try:
        envelope = json.loads(head)
        if not isinstance(envelope, dict):
            raise ValueError("the envelope is not an object")
        offsets = {(str(t), int(p)): int(o) for t, p, o in envelope["offsets"]}
        covered = {(str(t), int(p)): str(h) for t, p, h in envelope.get("covered") or ()}
        taken_at = float(envelope["taken_at"])
        # A reader seeks to these: a negative one would stop the planner.
        # A time past tomorrow cannot be (and one past time_t's range raised
        # OverflowError when the restore logged it).
        if any(p < 0 or o < 0 for (_, p), o in offsets.items()) or not math.isfinite(taken_at) \
                or taken_at > time.time() + 86400:
            raise ValueError("an offset, partition or time that cannot be")
    except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as exc:
        # OverflowError: json.loads reads Infinity, which int() cannot take.
        return _ignored(path, f"its envelope cannot be read ({exc})")
    expected_version = calstream_version or calstream.__version__
    if envelope.get("format") != FORMAT:
        return _ignored(path, f"format {envelope.get('format')!r}, this planner reads {FORMAT}")
    if envelope.get("calstream_version") != expected_version:
        return _ignored(path, f"written by calstream {envelope.get('calstream_version')}, "
                              f"this is {expected_version}")
    if topic_prefix is not None and envelope.get("topic_prefix") is None:
        # An upgrade's first start: rebuilt once, then snapshots name it.
        return _ignored(path, f"it names no deployment (written before snapshots named "
                              f"their topics' prefix; this is {topic_prefix!r})")
    if topic_prefix is not None and (envelope.get("topic_prefix") != topic_prefix or any(
            not t.startswith(topic_prefix) for t, _ in offsets)):
        return _ignored(path, f"written for another deployment (topic prefix "
                              f"{envelope.get('topic_prefix')!r}, this is {topic_prefix!r})")
    if max_age is not None and time.time() - taken_at > max_age:
        return _ignored(path, f"taken {(time.time() - taken_at) / 3600:.1f} h ago "
                              f"(more than {max_age / 3600:.0f} h)")
    if len(data) != envelope.get("size") or \
            hashlib.sha256(data).hexdigest() != envelope.get("sha256"):
        return _ignored(path, "its size or sha256 is not what its envelope says (corrupt)")
    try:
        # Views, not copies: the file's bytes stay in memory as one object.
        blocks = _blocks(memoryview(data), envelope.get("blocks"))
        body = _body(memoryview(data)[:len(data) - sum(b.stored for b in blocks)],
                     envelope.get("raw_size"))
        if blocks or envelope.get("blocks") is not None:
            if type(body) is not dict:
                raise ValueError("a body with blocks that is not an object")
            body["blocks"] = StoredBlocks(blocks, path)
    except (ValueError, zlib.error, RecursionError, MemoryError) as exc:
        return _ignored(path, f"its body cannot be read ({str(exc)[:200]})")
    return Snapshot(body, offsets, taken_at, len(data), covered)


def _not_ours_alone(st: os.stat_result) -> str | None:
    """Why a snapshot of this owner and mode could be another's work, or None.
    Its sha256 proves it whole, not whose: whoever may write it may write a
    state (orders counted as sent, offsets past records never read). Group
    write is left: a volume's fsGroup gives it to files."""
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not this planner's ({os.geteuid()})"
    if st.st_mode & 0o002:
        return f"anyone may write it (mode {st.st_mode & 0o777:o})"
    return None


def _inflated(data: bytes | memoryview, raw_size: Any) -> bytes:
    # Beyond sys.maxsize, zlib's length raised OverflowError (a forged
    # envelope's block size), not the ValueError every reader expects.
    if type(raw_size) is not int or not 0 <= raw_size < sys.maxsize:
        raise ValueError("no decompressed size in the envelope")
    inflate = zlib.decompressobj()
    raw = inflate.decompress(data, raw_size + 1)  # never more than the envelope says
    if len(raw) != raw_size or not inflate.eof or inflate.unconsumed_tail:
        raise ValueError(f"it decompresses to another size than the {raw_size} bytes stated")
    return raw


def _body(data: bytes | memoryview, raw_size: Any) -> Any:
    raw = _inflated(data, raw_size)
    del data
    with collector_paused():
        return json.loads(raw)


@dataclass(frozen=True)
class _Block:
    data: memoryview  # as stored (compressed)
    stored: int
    raw_size: int


def _blocks(data: memoryview, sizes: Any) -> list[_Block]:
    """The stored blocks at the end of ``data``, as the envelope lists them."""
    if sizes is None:
        return []
    if type(sizes) is not list or not all(
            type(s) is list and len(s) == 2 and all(type(n) is int and n >= 0 for n in s)
            for s in sizes) or sum(s[0] for s in sizes) > len(data):
        raise ValueError("the envelope's block sizes do not fit the snapshot")
    at, blocks = len(data) - sum(s[0] for s in sizes), []
    for stored, raw_size in sizes:
        blocks.append(_Block(data[at:at + stored], stored, raw_size))
        at += stored
    return blocks


class StoredBlocks(Sequence):
    """The snapshot's blocks, each decompressed and parsed when asked for
    (deciders/snapshot_blocks.py asks once per block). The file's sha256
    was checked whole at ``read``, so a block that still cannot be read is
    a writer's bug: a ValueError -- SnapshotInvalid to the planner, which is
    run again and rebuilds rather than decide on a state it cannot read, and
    the snapshot file is deleted there, timed
    (planner_rebuilds.rebuilding_when_unreadable). Not here: a block is read
    in a decision, on the planner's loop, and a deletion on a silent work
    directory held that loop for ever (session 45)."""

    def __init__(self, blocks: list[_Block], path: Path) -> None:
        self._blocks, self._path = blocks, path

    def __len__(self) -> int:
        return len(self._blocks)

    def stored(self, n: int) -> Stored:
        """Block ``n`` as stored, for a new snapshot that reuses it."""
        block = self._blocks[n]
        return Stored(block.data, block.raw_size)

    def __getitem__(self, n):  # type: ignore[override]
        block = self._blocks[n]
        try:
            with collector_paused():
                return json.loads(_inflated(block.data, block.raw_size))
        except (ValueError, zlib.error, RecursionError) as exc:
            log.error("planner: snapshot %s: block %d cannot be read (%s): the snapshot is "
                      "deleted", self._path, n, str(exc)[:200])
            raise ValueError(f"block {n} cannot be read: {str(exc)[:200]}") from None


def _ignored(path: Path, why: str) -> None:
    log.warning("planner: snapshot %s ignored, %s: rebuilding from the topics", path, why)
    return None
