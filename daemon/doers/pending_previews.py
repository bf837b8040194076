"""Previews a product event listed and nobody has drawn yet, kept in the
product store so that a daemon that stops first does not lose them.

A product's previews are drawn after its event is out, and with the preview
gate up to ``preview_max_wait`` later (preview_gate.py). A stop in between (a
deploy, a crash, kill -9) left the event naming pictures that never came.
Now the commit first writes an entry beside the product's record:
``<products>/.previews-pending/<stage>/<owner token>/<event id>.json``,
naming the product's outputs. The entry goes once its previews are drawn, or
could not be (a preview is optional: never retried for ever).

Each daemon keeps a stage's entries in a directory of its own, with an
``owner.json`` naming it (host, pid, token: the work claims' owner) whose
mtime is its heartbeat. At each heartbeat a daemon also looks at the other
directories of the stage and adopts those whose owner is gone, judged as a
work claim is (deciders/work_claims.py): a process of this host that is no
more at once, another host's when this daemon has seen its heartbeat silent
for ``claim_stale_seconds`` (doers/heartbeat_silence.py). Adopting moves each entry into its own directory
(a rename: of two adopters one wins each entry), reads it as untrusted
(deciders/pending_preview_entries.py, and each output inside the store),
and hands it back to be drawn. An owner that was only paused past the bound
and draws its entry after all makes the same PNGs again, written
atomically: no harm.

A drawing is a run in a worker like a calibration, and may be the runaway
one that takes the container down (a picture of a huge product): its entry,
adopted and drawn again at each restart, did so for ever. So the drawing's
start in a worker is marked beside its entry (``<event id>.json.drawing``,
``{"alone": ...}``: the only run in the daemon's workers, as the run marks
say it: doers/work_item_runs.py), the mark moves with the entry when it is
adopted, and goes with it. An adopted entry whose drawing was cut short
alone is dropped (refused: a preview is never retried for ever); one cut
short beside other runs is a *suspect*, drawn alone (``suspects``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from pathlib import Path

from calstream.daemon.deciders.pending_preview_entries import (
    LOG_KEYS,
    entry_name,
    event_id_of,
    read_entry,
)
from calstream.daemon.deciders.work_claims import FREE, LIVE, MINE
from calstream.daemon.doers.durable_files import temporary_of, write_json_atomically
from calstream.daemon.doers.product_store import OutsideRoot, ProductStore
from calstream.daemon.doers.work_claims import WorkClaims, mark_held
from calstream.steps.failures import error_text
from calstream.steps.previews.naming import planned_previews
from calstream.steps.regular_files import directory_in_place, read_regular_text

log = logging.getLogger("calstream.previews")

PENDING = ".previews-pending"
OWNER = "owner.json"
DRAWING = ".drawing"  # after an entry's name: its drawing began in a worker
ENTRY_LIMIT = 1 << 20  # bytes: a true entry is a few hundred

# (event id, the previews to draw, the log context of the product's item)
Adopted = tuple[str, list[dict[str, str]], dict[str, str | None]]


class PendingPreviews:
    """One stage's pending previews in the store of ``store`` (its top: every
    namespace's tree lies inside it)."""

    def __init__(self, store: ProductStore, stage: str, claims: WorkClaims):
        self.store = store
        self.claims = claims
        self.root = Path(store.top) / PENDING / stage
        self.mine = self.root / claims.me.token
        # Adopted entries whose drawing was cut short beside other runs: each
        # is drawn alone (work_item_runs.Solitude).
        self.suspects: set[str] = set()
        self._marking: dict[str, threading.Thread] = {}

    # --- one product's entry: in the commit's thread, and when drawn ---------

    def add(self, event_id: str, outputs: list[str], log_context: dict) -> bool:
        """Write the entry of a product whose previews are listed; False (and a
        warning) when it cannot be: the previews are then drawn as before,
        just not kept across a stop. Never an error of the commit."""
        try:
            path = self.mine / entry_name(event_id)
            self._own_directory()
            _write(path, {"outputs": list(outputs),
                          "log_context": {k: log_context.get(k) for k in LOG_KEYS}})
            return True
        except (OSError, ValueError) as exc:
            log.warning("previews of %s not kept across a stop: %s", str(event_id)[:12], exc,
                        extra={"extra": log_context})
            return False

    def done(self, event_id: str) -> None:
        """Drawn (or given up): the entry goes, and its drawing's mark."""
        if (marking := self._marking.pop(event_id, None)) is not None:
            marking.join()
        self.suspects.discard(event_id)
        with contextlib.suppress(OSError, ValueError):
            entry = self.mine / entry_name(event_id)
            entry.unlink(missing_ok=True)
            entry.with_name(entry.name + DRAWING).unlink(missing_ok=True)

    def unmark(self, event_id: str) -> None:
        """The drawing was stopped (a graceful stop cancels it), not cut
        short: its mark goes, the entry stays for the next daemon. A mark an
        earlier daemon left (a suspect's, cut short beside others) stays
        unless this daemon's drawing began."""
        if (marking := self._marking.pop(event_id, None)) is None:
            return
        marking.join()
        with contextlib.suppress(OSError, ValueError):
            (self.mine / (entry_name(event_id) + DRAWING)).unlink(missing_ok=True)

    def began(self, event_id: str, alone: bool) -> None:
        """On the event loop, as the entry's drawing is given a worker: its
        mark written in a thread (``done`` waits for it). A hint, not synced:
        one that cannot be written is passed over."""
        def mark() -> None:
            try:
                entry = self.mine / entry_name(event_id)
                if entry.is_file():  # kept (add): an entry to mark
                    _write(entry.with_name(entry.name + DRAWING), {"alone": alone}, "mark")
            except (OSError, ValueError) as exc:
                log.debug("the drawing of %s not marked: %s", str(event_id)[:12], exc)
        marking = threading.Thread(target=mark, name="preview-mark", daemon=True)
        marking.start()
        self._marking[event_id] = marking

    def _own_directory(self) -> None:
        # No link on the way, each time (one may be made later): the writes
        # stay in the store (OutsideRoot, a ValueError, otherwise).
        self.store.inside(self.mine)
        if (self.mine / OWNER).is_file():
            return
        directory_in_place(self.mine, root=self.store.top, what="the pending previews' directory")
        self.store.inside(self.mine)
        mark_held(self.mine / OWNER, self.claims.me.token)  # alive to this process's others
        _write(self.mine / OWNER, {**self.claims.me.as_record(), "since": time.time()}, "owner")

    # --- the heartbeat, adoption, and the end --------------------------------

    def beat(self) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.mine / OWNER, follow_symlinks=False)

    def adopt(self) -> tuple[list[Adopted], int]:
        """Every entry of the stage's gone owners, moved into this daemon's
        directory and read, and how many were refused (dropped with a warning)."""
        try:
            self.store.inside(self.root)  # a link there would move others' files
            others = [d for d in os.scandir(self.root)
                      if d.name != self.mine.name and d.is_dir(follow_symlinks=False)]
        except OSError:  # none yet (FileNotFoundError), or unreadable: nothing to adopt
            return [], 0
        except ValueError as exc:  # OutsideRoot
            log.warning("pending previews not looked at: %s", exc)
            return [], 0
        adopted: list[Adopted] = []
        refused = 0
        for other in others:
            directory = Path(other.path)
            if not self._gone(directory):
                continue
            for name in _names(directory):
                if name.endswith(DRAWING):  # moved with its entry, else its entry is gone
                    if not (directory / name[:-len(DRAWING)]).exists():
                        with contextlib.suppress(OSError):
                            (directory / name).unlink(missing_ok=True)
                    continue
                if event_id_of(name) is None:
                    if temporary_of(name) is not None:  # a gone writer's half: garbage
                        with contextlib.suppress(OSError):
                            (directory / name).unlink()
                    continue  # anything else someone put there: left
                try:
                    self._own_directory()
                    os.rename(directory / name, self.mine / name)
                except FileNotFoundError:
                    continue  # another daemon adopted it first
                except (OSError, ValueError) as exc:
                    log.warning("pending previews %s not adopted: %s", directory / name, exc)
                    continue
                with contextlib.suppress(OSError):  # its drawing's mark, if it began
                    os.rename(directory / (name + DRAWING), self.mine / (name + DRAWING))
                taken = self._read(name)
                if isinstance(taken, str):
                    refused += 1
                elif taken is not None:
                    adopted.append(taken)
            with contextlib.suppress(OSError):  # emptied: no owner to judge any more
                (directory / OWNER).unlink(missing_ok=True)
                directory.rmdir()
        return adopted, refused

    def _gone(self, directory: Path) -> bool:
        verdict, _, _ = self.claims.look(directory / OWNER)
        if verdict in (LIVE, MINE):
            return False
        if verdict == FREE:  # no owner file: judged by the directory's own silence
            with contextlib.suppress(OSError):
                silent = self.claims.silence.silent_for(directory, directory.stat())
                return silent > self.claims.stale_seconds
            return False
        return True

    def _read(self, name: str) -> Adopted | str | None:
        """The entry to draw; why it was refused; None: nothing left to draw."""
        path = self.mine / name
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):  # a link would be read where it points
                raise ValueError("not a regular file")
            entry = read_entry(json.loads(read_regular_text(path, limit=ENTRY_LIMIT)))
            if not isinstance(entry, str):
                outputs, context = entry
                # Kept before a move of the store: its products are under the new root.
                outputs = [self.store.moved(p) for p in outputs]
                for p in outputs:  # inside: one warning (below), not one more per path
                    self.store.inside(Path(p))
                previews = [p for p in planned_previews(outputs)
                            if self.store.holds(Path(p["path"]))]
        except OutsideRoot as exc:
            entry = f"an output outside the product store: {str(exc)[:200]}"
        # RuntimeError: a loop of links on the way, as resolve() in 3.11 says it
        except (OSError, ValueError, RecursionError, RuntimeError) as exc:
            entry = f"unreadable: {error_text(exc, 200)}"
        cut_short = _cut_short(path.with_name(name + DRAWING))
        if not isinstance(entry, str) and cut_short == "alone":
            entry = ("its drawing was cut short with its daemon, alone in its workers (the "
                     "OOM killer, kill -9): not drawn again, as a drawing that takes the "
                     "daemon down would at every start")
        if isinstance(entry, str):
            log.warning("pending previews %s refused (%s): dropped", name, entry)
            path.unlink(missing_ok=True)
            path.with_name(name + DRAWING).unlink(missing_ok=True)
            return entry
        if not previews:
            path.unlink(missing_ok=True)
            path.with_name(name + DRAWING).unlink(missing_ok=True)
            return None
        event_id = event_id_of(name)
        if cut_short == "beside":
            self.suspects.add(event_id)
            log.warning("previews of %s: their drawing was cut short with its daemon, beside "
                        "other runs: drawn again alone (this daemon's other runs wait for it)",
                        context.get("exposure_id") or event_id[:12], extra={"extra": context})
        return event_id, previews, context

    def close(self) -> None:
        """At a stop: this daemon's directory goes if no entry is left in it
        (those left are adopted by the next daemon of the stage)."""
        mark_held(self.mine / OWNER, self.claims.me.token, held=False)
        if any(event_id_of(n) for n in _names(self.mine)):
            return
        with contextlib.suppress(OSError):
            for name in _names(self.mine):
                (self.mine / name).unlink()
            self.mine.rmdir()


def pending(store_top: Path) -> int:
    """How many products' previews are listed and not drawn yet, over every
    stage and owner of the store (the demo waits for none before it stops)."""
    return sum(1 for p in (Path(store_top) / PENDING).glob("*/*/*.json") if event_id_of(p.name))


def _cut_short(mark: Path) -> str | None:
    """How the drawing a mark stands for was cut short with its daemon:
    "alone", "beside" (other runs), or None (no mark: it never began). A
    mark that cannot be read is taken as "beside": drawn once more, alone."""
    try:
        text = read_regular_text(mark, limit=ENTRY_LIMIT)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "beside"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return "beside"
    return "alone" if type(value) is dict and value.get("alone") is True else "beside"


def _names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def _write(path: Path, value: dict, what: str = "entry") -> None:
    # No fsync: an entry lost with the machine loses what it lost before
    # (previews); its half-written form is never read (a rename).
    write_json_atomically(path, value, what=f"pending previews' {what}", sync=False)
