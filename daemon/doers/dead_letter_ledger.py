"""Each daemon's own copy of the dead letters it published.

The dead-letter topic is the operators' list of what needs them (``calstream
deadletters list``, ``redrive``, the console). The embedded broker keeps its
topics in memory, so a restart of it -- the supervisor's own healing of a
crashed or wedged broker included -- emptied that list: the failures an
operator had to look at were gone without a trace. Product events come back
from the product store and plans and holds from the planner's ledger
(doers/broker_recovery.py); dead letters have nothing behind them, so the
publisher writes each one here before sending it, and a broker that lost
them gets them again, with their own event ids (broker_recovery.py,
``recover_dead_letters``).

Layout: ``<work_dir>/deadletters/deadletter/<event_id>.json`` (the dead
letter's body), the planner ledger's mechanism (planner_ledger.KeyedLedger):
names, torn writes and stray files are judged alike.

Bounded: a flood of bad files must not fill the disk with copies. Past
``capacity`` records the oldest (by the time they were kept) are removed,
down to nine tenths of it, so that removing is not done at every write.
The removal is a pass over the directory (its listing, an lstat of each
letter, the oldest unlinked) done PRUNE_CALLS calls at a time, one step
after each letter's write (``_Pruning``): done whole, it was up to 10,000
lstats and 1,000 unlinks inside one letter's timed write, which storage
that is slow but answers (a busy NFS server) took past its time, so the
write was called hung and every letter after it sent without its copy
until the pass ended (session 46). A step that does not answer is left
behind as any write is (Publisher._backed_up).
The topic is the list; this is its backup, so a write that fails (a full
disk) is warned about and the dead letter is still sent, and one that does
not answer (a silent work directory) is left behind after its time and the
letter sent (the publisher calls it timed: Publisher._backed_up).

Redrives are kept beside the letters: ``<work_dir>/deadletters/redrives/
<event_id>.json`` (the dead letter's id and its redrive notes). The only
mark of a redrive was its ``calstream-redrive`` header on the record it
re-sent, on a topic a broker loses with the dead letters: a dead letter
put back came back "not redriven", and an operator could redrive it twice.
The operator's command may run on another machine than this daemon, so it
cannot write here; the daemon that reads the redriven record (its
consumer: the stage, or the planner, that dead-lettered it) keeps the
note, if the dead letter is one it keeps and the record is that letter's
own original (topic, key, value digest: a header is anyone's, and a mark
on a forger's record of their own would hide the letter from ``list
--pending``), and puts it back with it. A
record read again keeps no second copy; at most ``NOTES`` notes a letter.

Where the broker put the newest one sent is noted too (``newest-place.json``:
event id, topic, partition, offset): a topic that no longer holds that
letter there has lost what this daemon sent, even when it is not empty
(another daemon's letters put back first, on a topic recreated), while one
whose retention removed it has not (broker_recovery.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.ledger_names import file_name, key_of, key_problem
from calstream.daemon.doers.noted_places import NotedPlace
from calstream.daemon.doers.planner_ledger import KeyedLedger
from calstream.topics.dead_letters import is_own_original, redrive_marks
from calstream.topics.times import in_time_order

log = logging.getLogger("calstream.publisher")

TOPIC = "deadletter"
REDRIVES = "redrives"
NOTES = 20  # redrive notes kept of one dead letter: the newest
CAPACITY = 10_000  # dead letters kept; at ~2-5 kB each, tens of MB at most
PLACE = "newest-place.json"  # in the ledger's root, beside the directory of letters
# Calls on the directory one letter's write may add to remove the oldest (a
# letter's own write is about five): a pass over 10,000 letters is spread
# over some 300 letters, the bound overshot by as many meanwhile.
PRUNE_CALLS = 32


@dataclass
class _Pruning:
    """A pass removing the oldest letters: listed, each aged (lstat), then
    the oldest removed, a few calls at a time."""
    unaged: list[str] = field(default_factory=list)  # listed, not yet lstat-ed
    aged: list[tuple[int, str]] = field(default_factory=list)  # (mtime, name)
    doomed: list[str] | None = None  # the oldest, to remove (newest first); None: aging
    kept_since: int = 0  # letters kept after its listing (all newer than it saw)
    # Kept (again) after its listing: aged old maybe, but new now (a retry).
    renewed: set[str] = field(default_factory=set)
    removed: int = 0


class DeadLetterLedger(KeyedLedger):
    DIRECTORY = "deadletters"
    KINDS = {TOPIC: "event_id", REDRIVES: "dead_letter"}
    WHAT = "dead-letter ledger"
    LOG = log

    def __init__(self, work_dir: Path, capacity: int = CAPACITY):
        super().__init__(work_dir)
        self.capacity = capacity
        self._count: int | None = None  # records in the directory, counted when first needed
        self._lock = threading.Lock()  # the planner's thread keeps dead letters too
        self._pruning: _Pruning | None = None  # a removal of the oldest under way
        self.place = NotedPlace(self.root / PLACE, f"{self.WHAT} place", work_dir)

    def keep_letter(self, body: dict[str, Any]) -> bool:
        """Keep a dead letter's body; False (with a warning) if it could not be."""
        try:
            self.keep(TOPIC, body)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a full disk; no usable key
            log.warning("dead letter %s not kept in %s (%s): it is still sent, but a broker "
                        "that loses it will not get it back", str(body.get("event_id"))[:64],
                        self.root, exc)
            return False
        with self._lock:
            try:
                listed = None
                if self._count is None:
                    listed = self._names()
                    self._count = len(listed)
                else:
                    self._count += 1  # a dead letter kept again is counted twice: pruned sooner
                if self._pruning is not None:
                    self._pruning.kept_since += 1
                    # A retry of a letter it aged old is the newest now: not removed.
                    self._pruning.renewed.add(self._path(TOPIC, body).name)
                elif self._count > self.capacity:  # one listing a call at most
                    self._pruning = _Pruning(unaged=self._names() if listed is None else listed)
                if self._pruning is not None:
                    self._prune_step(PRUNE_CALLS)
            except OSError as exc:  # the bound is the ledger's care, never the send's fault
                self._pruning = None  # begun again at the next one
                log.warning("%s: the oldest dead letters in %s could not be removed (%s): "
                            "tried again at the next one", self.WHAT, self.root, exc)
        return True

    def note_place(self, event_id: str, topic: str, partition: int, offset: int) -> None:
        """Where the broker put dead letter ``event_id`` (noted_places.py)."""
        self.place.note(event_id, topic, partition, offset)

    def newest_place(self) -> dict[str, Any] | None:
        """The last place noted (``note_place``), or None."""
        return self.place.newest()

    def keep_redrives(self, record) -> int:
        """Keep the redrive notes in a consumed ``record``'s headers that name
        a dead letter kept here, if the record is that letter's own original
        (``is_own_original``: a mark on a record of a forger's own is not
        kept); how many were new. A failed write is warned about: the
        record is run all the same, and only a broker's loss would forget
        its redrive."""
        new = 0
        for mark in redrive_marks(record.headers):
            letter = mark["dead_letter"]
            try:
                with self._lock:
                    if not self._has_letter(letter):
                        continue  # another daemon's, or none: nothing to put it back with
                    body = self._record_at(self._path(TOPIC, {"event_id": letter}), TOPIC)
                    if body is None or not is_own_original(
                            body.get("original"), record.topic, record.key, record.value):
                        log.warning("%s: a record on %s[%s]@%s carries a redrive mark of "
                                    "dead letter %s but is not its original: not kept",
                                    self.WHAT, str(record.topic)[:200], record.partition,
                                    record.offset, letter[:64])
                        continue
                    kept = self._record_at(self._path(REDRIVES, {"dead_letter": letter}),
                                           REDRIVES) or {}
                    notes = self.redrives_of(kept)
                    if mark in notes:
                        continue
                    self.keep(REDRIVES, {"dead_letter": letter, "notes": [*notes, mark][-NOTES:]})
                    new += 1
            except (OSError, ValueError) as exc:  # a full disk; a name no ledger writes
                log.warning("%s: the redrive of dead letter %s not kept in %s (%s): a broker "
                            "that loses it will list it as not redriven", self.WHAT,
                            letter[:64], self.root, exc)
        return new

    def redrives(self, answered: Callable[[], None] = lambda: None
                 ) -> dict[str, list[dict[str, Any]]]:
        """Dead letter event id -> its redrive notes, as kept (untrusted: only
        notes that are tables of text are given). ``answered``: ``kept``'s."""
        return {kept["dead_letter"]: notes for kept in self.kept(REDRIVES, answered=answered)
                if (notes := self.redrives_of(kept))}

    @staticmethod
    def redrives_of(kept: dict[str, Any]) -> list[dict[str, str]]:
        """The notes of one kept redrive record: those that are tables of text."""
        notes = kept.get("notes")
        return [n for n in notes if isinstance(n, dict) and all(
            isinstance(v, str) for v in n.values())] if isinstance(notes, list) else []

    def _has_letter(self, event_id: str) -> bool:
        """Whether dead letter ``event_id`` is one kept here."""
        return key_problem(event_id) is None \
            and os.path.isfile(self.root / TOPIC / file_name(event_id))

    def letters(self, answered: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
        """Every dead letter kept, oldest first (as they were published).
        ``answered``: ``kept``'s."""
        # By the time each says, not its text (an offset other than Z).
        return sorted(self.kept(TOPIC, answered=answered), key=lambda b: in_time_order(b.get("emitted_at")))

    def _names(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.root / TOPIC) if key_of(n) is not None]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _prune_step(self, calls: int) -> None:
        """The pass under way, ``calls`` more calls on the directory of it at
        most (an lstat, an unlink); the count set once it has ended."""
        pruning, directory = self._pruning, self.root / TOPIC
        assert pruning is not None
        while calls > 0 and pruning.unaged:
            name, calls = pruning.unaged.pop(), calls - 1
            with contextlib.suppress(FileNotFoundError):  # removed since its listing
                pruning.aged.append((os.lstat(directory / name).st_mtime_ns, name))
        if pruning.unaged:
            return
        if pruning.doomed is None:
            pruning.aged.sort()
            keep = int(self.capacity * 0.9)
            too_many = max(0, len(pruning.aged) + pruning.kept_since - keep)
            pruning.doomed = [name for _, name in reversed(pruning.aged[:too_many])]
        while calls >= 2 and pruning.doomed:  # a letter and its redrives: two unlinks
            name = pruning.doomed.pop()
            if name in pruning.renewed:
                continue
            calls -= 2
            for kept in (directory / name, self.root / REDRIVES / name):  # its redrives too
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(kept)
            pruning.removed += 1
        if pruning.doomed:
            return
        self._pruning = None
        self._count = len(pruning.aged) - pruning.removed + pruning.kept_since
        if pruning.removed:
            log.info("%s: removed the %d oldest of %d kept dead letters (at most %d are kept)",
                     self.WHAT, pruning.removed, len(pruning.aged) + pruning.kept_since,
                     self.capacity)
