"""The product store: where calibrated files live, and the ledger of what is done.

Layout: ``<products>/<program>/<observation>/<files>``, with a provenance record
per work item in ``.provenance/``. A superseding stage-3 product (version N >
1) goes to ``<observation>/v<N>/``: the files of the version it supersedes
stay as they are, since a subscriber may be reading them. A pipeline writes into a private temporary
directory on the same filesystem; outputs are then renamed into place one by
one (atomic per file) and the provenance record is written last. The record is
the commit marker, for the daemon and for every reader (docs/contract.md,
"Reading the product tree"): a file is a product only while a record lists it
with its digest (``announced``). A crash anywhere before that leaves, at worst,
complete files no record lists, which a re-run replaces. A run that replaces
the outputs of an earlier one first withdraws the earlier record, so no record
ever lists a file whose bytes are being replaced.

Namespaces: the live products are the tree above; a reprocessing into
namespace N has a tree of its own, ``<products>/namespaces/N/<program>/...``,
laid out the same way, so nothing of N can overwrite a live file. Readers
find the tree of record through the ``<products>/current`` symlink, which
``promote`` swaps atomically (rename(2) of a new link over the old one).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.namespaces import (  # noqa: F401 - re-exported for callers
    CURRENT,
    LIVE,
    NAMESPACES,
    PROMOTIONS,
    BadNamespace,
    check_namespace,
)
from calstream.daemon.deciders.provenance_records import record_problem
from calstream.daemon.deciders.store_move import rerooted_event, rerooter
from calstream.daemon.doers.durable_files import fsync_dir, syncing, write_json_atomically
from calstream.daemon.doers.store_upkeep import OWNER_FILE, SCRATCH_DIR, StoreUpkeep
from calstream.steps.fitsfile import file_digest
from calstream.steps.regular_files import read_regular_text, set_aside_unless_regular
from calstream.topics.times import in_time_order

log = logging.getLogger("calstream.store")

_PROV = ".provenance"
_LOGS = ".logs"
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")  # directory(): version N > 1 is in v<N>

@dataclass(frozen=True)
class Done:
    """A finished work item found in the store."""

    record: dict[str, Any]  # its paths read under the store's root (after a move)
    published: dict[str, Any] | None = None  # its event as written, None: ``event``

    @property
    def event(self) -> dict[str, Any]:
        return self.record["event"]

    @property
    def published_event(self) -> dict[str, Any]:
        """The event as it was published, to send again under its id: after a
        move ``event`` names the new root, and other content under an id is
        what a subscriber reports as a forgery (docs/contract.md)."""
        return self.published if self.published is not None else self.event


class ProductStore(StoreUpkeep):
    def __init__(self, root: Path, namespace: str = LIVE, *, top: Path | None = None,
                 moved_from: Iterable[str | Path] = ()):
        self.root = Path(root)
        self.namespace = namespace
        self.top = Path(top) if top is not None else self.root  # the live tree
        # The store's earlier roots (products_moved_from): its records, the
        # events as published, name files there; read under this root.
        self.moved_from = tuple(str(m) for m in moved_from)
        self._reroot = rerooter(self.moved_from, str(self.top.absolute()))

    def moved(self, path: str) -> str:
        """``path`` read under this root if an earlier root of the store names it."""
        return path if self._reroot is None else self._reroot(path)

    def for_namespace(self, namespace: str) -> ProductStore:
        """The store of ``namespace``: the live one, or its own tree."""
        if namespace == self.namespace:
            return self
        check_namespace(namespace)
        if namespace == LIVE:
            return ProductStore(self.top, top=self.top, moved_from=self.moved_from)
        return ProductStore(self.top / NAMESPACES / namespace, namespace, top=self.top,
                            moved_from=self.moved_from)

    def namespaces(self) -> list[str]:
        """The reprocessing namespaces with a tree here. A directory is untrusted
        like any file: one whose name is no namespace's ("Bad Name", "live")
        is left out with a warning; it made the planner's start raise."""
        base = self.top / NAMESPACES
        found = []
        for p in sorted(base.iterdir()) if base.is_dir() else ():
            if not p.is_dir():
                continue
            try:
                found.append(check_namespace(p.name, allow_live=False))
            except BadNamespace as exc:
                log.warning("product store: %s left out: %s", p, exc)
        return found

    def namespace_of(self, path: Path) -> str | None:
        """Which namespace's tree ``path`` lies in (None: outside the store)."""
        try:
            parts = Path(path).resolve().relative_to(self.top.resolve()).parts
        # ValueError also for a NUL; RuntimeError: a loop of links. A path no
        # file can have is in no tree (a forged record's, read by `replay`).
        except (ValueError, OSError, RuntimeError):
            return None
        if len(parts) >= 2 and parts[0] == NAMESPACES:
            return parts[1]
        return LIVE

    def directory(self, program: str, observation: str, version: int = 1) -> Path:
        base = self.root / program / observation
        return self.inside(base if version <= 1 else base / f"v{version}")

    def earlier_versions(self, program: str, observation: str, version: int) -> list[int]:
        """The versions before ``version`` that have a directory here, newest
        first. Listed, not counted down from ``version``: that is any integer
        a work order says (10**18 was a loop of 10**18 lookups)."""
        if version <= 1:
            return []
        base = self.directory(program, observation)
        found = [int(m[1]) for p in (base.iterdir() if base.is_dir() else ())
                 if (m := _VERSION_DIR.fullmatch(p.name))]
        return sorted({v for v in found if v < version} | {1}, reverse=True)

    def inside(self, path: Path) -> Path:
        """``path`` if it lies inside this store's root, with no symbolic link
        between the store's top and it. Names come from messages, and a write
        must never land outside the store; nor, through a link someone made
        in it (``namespaces/<ns>``, a program's directory), outside it or in
        another tree: judging against the resolved root let a namespace's
        tree linked elsewhere take its writes along."""
        given, top = os.path.abspath(path), os.path.abspath(self.top)
        root = os.path.abspath(self.root)
        if given != root and not given.startswith(os.path.join(root, "")):
            raise OutsideRoot(f"{path} is outside the product store {self.root}")
        # Each existing component below the top, looked at without following
        # it: none may be a link. (abspath has taken out the ".." lexically,
        # which is where they lead when nothing below the top is a link.) The
        # top itself may be one: a store on another disk. This asks a stat
        # of the few names below the top, where resolving both paths asked
        # one of every name from "/" (64 us a call, ~19 calls an exposure).
        at = top
        for name in given[len(top):].split(os.sep):
            if not name:
                continue
            at = os.path.join(at, name)
            try:
                mode = os.lstat(at).st_mode
            except OSError:  # gone, or not a directory: nothing below it exists
                break
            if stat.S_ISLNK(mode):
                raise OutsideRoot(f"{path} passes through a symbolic link inside the product "
                                  f"store {self.top}: its writes would follow it")
        return path

    def holds(self, path: Path) -> bool:
        """``inside`` as a question, for an optional write: a warning if not."""
        try:
            self.inside(path)
        except OutsideRoot as exc:
            log.warning("not written: %s", exc)
            return False
        return True

    def scratch(self, program: str, observation: str, work_id: str, version: int = 1) -> Path:
        """A private directory for a pipeline to write into, on the store's filesystem."""
        base = self.inside(self.directory(program, observation, version) / SCRATCH_DIR)
        base.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{work_id[:16]}-", dir=base))
        (scratch / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        return scratch

    def log_path(self, program: str, observation: str, name: str, stage: str,
                 version: int = 1) -> Path:
        """Where a run's pipeline log goes: kept for failed runs too."""
        return self.inside(self.directory(program, observation, version) / _LOGS
                           / f"{name}.{stage}.log")

    def _record_path(self, program: str, observation: str, name: str, stage: str,
                     version: int = 1) -> Path:
        return self.inside(self.directory(program, observation, version) / _PROV
                           / f"{name}.{stage}.json")

    def publish(self, scratch: Path, program: str, observation: str, *, name: str, stage: str,
                record: dict[str, Any], version: int = 1, synced: bool = False) -> list[Path]:
        """Move the outputs the record lists from ``scratch`` into place, then
        write the record.

        ``record`` must hold the "event" to re-emit on redelivery, with the
        outputs (paths, digests, sizes). ``synced``: the files are already on
        disk (the worker synced them, output_sealing.py); otherwise they
        are synced here, all before the first rename. The renames are made
        durable by one sync of the directory, before the record; ``scratch``
        then holds only its owner mark and goes at once.
        """
        final_dir = self.directory(program, observation, version)
        path = self._record_path(program, observation, name, stage, version)
        # A directory in the record's place made the unlink raise: moved aside.
        if set_aside_unless_regular(path, what="provenance record") is None and path.exists():
            # Files it lists are about to be replaced: withdraw the announcement
            # first (its product event stays history).
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
        # The outputs the record announces, and nothing else of the run's: the
        # directory is every exposure's of the observation, and a file left
        # unlisted under another's product name replaced its bytes. lstat: a
        # link is none of its products (it may lead anywhere). The rest goes
        # with the scratch directory.
        listed = {Path(out["path"]).name for out in record["event"].get("outputs", [])}
        files = [src for src in sorted(scratch.iterdir())
                 if src.name in listed and stat.S_ISREG(src.lstat().st_mode)
                 and not src.name.startswith(".")]
        if not synced:
            with syncing(files):
                pass
        moved = []
        for src in files:
            os.replace(src, final_dir / src.name)
            moved.append(final_dir / src.name)
        fsync_dir(final_dir)
        self._write_record(path, record)
        shutil.rmtree(scratch, ignore_errors=True)
        return moved

    def write_record(self, program: str, observation: str, *, name: str, stage: str,
                     record: dict[str, Any], version: int = 1) -> None:
        """A record with no outputs (a skipped run), so a redelivery re-emits it."""
        self._write_record(self._record_path(program, observation, name, stage, version), record)

    def _write_record(self, path: Path, record: dict[str, Any]) -> None:
        write_json_atomically(path, record, what="provenance record")

    def lookup(self, program: str, observation: str, *, name: str, stage: str,
               work_id: str | None = None, verify: bool = True, version: int = 1) -> Done | None:
        """The finished work item for (name, stage), if its outputs are intact.

        With ``work_id``, only a record of that exact work item counts (same
        inputs, pipeline, context, parameters and versions).
        """
        path = self._record_path(program, observation, name, stage, version)
        read = self._read_record(path, "treating as not done")
        if read is None:
            return None
        record, as_written = read
        if work_id is not None and record.get("work_id") != work_id:
            return None
        if verify and (problem := self.outputs_problem(record, path)):
            log.warning("%s: redoing", problem)
            return None
        return Done(record, as_written["event"])

    def outputs_problem(self, record: dict[str, Any], path: Path | str = "its record"
                        ) -> str | None:
        """Why the files a usable record (at ``path``) lists are not its
        products: one missing, no regular file, another size or digest."""
        for out in record["event"].get("outputs", []):
            p = Path(out["path"])
            try:
                # lstat: a product is a regular file; a link or a FIFO
                # in its place is not hashed (it may lead anywhere).
                st = p.lstat()
                same = stat.S_ISREG(st.st_mode) and st.st_size == out.get("size", st.st_size) \
                    and file_digest(p) == out["digest"]
            except FileNotFoundError:
                return f"product {p} listed in {path} is missing"
            if not same:
                return f"product {p} does not match its provenance"
        return None

    def _provenance(self, path: Path, then: str, *, as_written: bool = False
                    ) -> dict[str, Any] | None:
        read = self._read_record(path, then)
        return None if read is None else read[1] if as_written else read[0]

    def _read_record(self, path: Path, then: str
                     ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The record at ``path`` if it is one calstream could have written
        (deciders/provenance_records.py): (its paths read under this root, as
        written); else None, with a warning saying why and what follows (``then``)."""
        try:
            record = json.loads(read_regular_text(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # not JSON, not UTF-8, nested too deep
            log.warning("unreadable provenance record %s (%s): %s", path, exc, then)
            return None
        except RecursionError:
            log.warning("unreadable provenance record %s (nested too deeply): %s", path, then)
            return None
        written = record
        if self._reroot is not None and type(record) is dict and type(record.get("event")) is dict:
            record = {**record, "event": rerooted_event(record["event"], self._reroot)}
        problem = record_problem(record, str(self.root.absolute()))
        if problem:
            log.warning("provenance record %s cannot be used (%s): %s", path, problem, then)
            return None
        return record, written

    def announced(self, path: Path) -> dict[str, Any] | None:
        """The reader's rule: the output entry of the record that announces
        ``path`` with the file's current digest, or None (not a product: being
        written, replaced, or left by a crash)."""
        path = Path(path)
        for record_path in sorted((path.parent / _PROV).glob("*.json")):
            record = self._provenance(record_path, "its files are not products")
            for out in record["event"].get("outputs", []) if record else ():
                if out.get("path") == str(path):
                    try:  # lstat: a link (out of the store, to a device) is no product
                        st = path.lstat()
                        same = stat.S_ISREG(st.st_mode) and st.st_size == out.get("size") \
                            and file_digest(path) == out.get("digest")
                    except OSError:  # gone, or a FIFO or device put there since
                        return None
                    return out if same else None
        return None

    def records(self, stage: str = "*", *, as_written: bool = False,
                memo: dict[Path, tuple] | None = None,
                answered: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Every provenance record in the store (of ``stage``), oldest event
        first; ``as_written``: their events as published (to send again).
        ``memo``: what an earlier call (with the same ``as_written``) read,
        kept by a caller that reads again (the console, every 5 s while a
        page is open): only records new or replaced (renamed over: another
        inode) since are read; it read them all each time, 2.5 s of CPU for
        20,000, and warned of each bad one. ``answered()`` after each record
        read: a timed caller's sign that the store still answers
        (FileReads.listing)."""
        found = []
        kept: dict[Path, tuple] = {}
        for path in self._record_paths(stage):
            if memo is None:
                record = self._provenance(path, "left out", as_written=as_written)
            else:
                try:
                    st = path.lstat()
                except OSError:  # gone since the listing
                    continue
                identity = (st.st_ino, st.st_size, st.st_mtime_ns)
                known = memo.get(path)
                record = known[1] if known and known[0] == identity \
                    else self._provenance(path, "left out", as_written=as_written)
                kept[path] = (identity, record)
            if record is not None:
                found.append(record)
            if answered is not None:
                answered()
        if memo is not None:
            memo.clear()
            memo.update(kept)
        # By the time each says, not its text (an offset other than Z).
        return sorted(found, key=lambda r: in_time_order(r["event"].get("emitted_at")))

    def each_record(self, stage: str = "*") -> Iterator[dict[str, Any]]:
        """``records``' records one at a time as they are found (in no
        order), none kept: a reader that keeps few of a mission's records
        (calstream replay's arrivals from the store) held them all, some
        8 KB each (session 45)."""
        for path in self._record_paths(stage):
            record = self._provenance(path, "left out")
            if record is not None:
                yield record

    def _record_paths(self, stage: str) -> Iterator[Path]:
        pattern = f"*.{stage}.json"
        yield from self.root.glob(f"*/*/{_PROV}/{pattern}")
        yield from self.root.glob(f"*/*/v*/{_PROV}/{pattern}")

    def has_input(self, program: str, observation: str, name: str, stage: str,
                  digest: str) -> bool:
        """Whether (name, stage) has a record for an input with this digest."""
        done = self.lookup(program, observation, name=name, stage=stage, verify=False)
        return bool(done and any(i.get("digest") == digest for i in done.event.get("inputs", [])))


class OutsideRoot(ValueError):
    """A path built from a message's names that would leave the store."""
