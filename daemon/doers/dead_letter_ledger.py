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
The topic is the list; this is its backup, so a write that fails (a full
disk) is warned about and the dead letter is still sent.

Where the broker put the newest one sent is noted too (``newest-place.json``:
event id, topic, partition, offset): a topic that no longer holds that
letter there has lost what this daemon sent, even when it is not empty
(another daemon's letters put back first, on a topic recreated), while one
whose retention removed it has not (broker_recovery.py).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.ledger_names import key_of
from calstream.daemon.doers.durable_files import write_json_atomically
from calstream.daemon.doers.planner_ledger import KeyedLedger
from calstream.steps.regular_files import read_regular_file
from calstream.topics import contract

log = logging.getLogger("calstream.publisher")

TOPIC = "deadletter"
CAPACITY = 10_000  # dead letters kept; at ~2-5 kB each, tens of MB at most
PLACE = "newest-place.json"  # in the ledger's root, beside the directory of letters
_OFFSETS = 2 ** 63  # Kafka's offsets are signed 64-bit


class DeadLetterLedger(KeyedLedger):
    DIRECTORY = "deadletters"
    KINDS = {TOPIC: "event_id"}
    WHAT = "dead-letter ledger"
    LOG = log

    def __init__(self, work_dir: Path, capacity: int = CAPACITY):
        super().__init__(work_dir)
        self.capacity = capacity
        self._count: int | None = None  # records in the directory, counted when first needed
        self._lock = threading.Lock()  # the planner's thread keeps dead letters too

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
                if self._count is None:
                    self._count = len(self._names())
                else:
                    self._count += 1  # a dead letter kept again is counted twice: pruned sooner
                if self._count > self.capacity:
                    self._count = self._prune(int(self.capacity * 0.9))
            except OSError as exc:  # the bound is the ledger's care, never the send's fault
                log.warning("%s: the oldest dead letters in %s could not be removed (%s): "
                            "tried again at the next one", self.WHAT, self.root, exc)
        return True

    def note_place(self, event_id: str, topic: str, partition: int, offset: int) -> None:
        """Where the broker put dead letter ``event_id``. A hint, not synced: a
        note lost with the machine, or unreadable, leaves the judging to the
        topic being empty, as before there were notes; so a failed write is
        warned about and never fails the send."""
        try:
            with self._lock:  # the planner's thread sends dead letters too
                write_json_atomically(self.root / PLACE, {
                    "event_id": event_id, "topic": topic, "partition": partition,
                    "offset": offset}, what=f"{self.WHAT} place", root=self.work_dir, sync=False)
        except OSError as exc:
            log.warning("%s: the place of dead letter %s not noted in %s (%s)", self.WHAT,
                        str(event_id)[:64], self.root, exc)

    def newest_place(self) -> dict[str, Any] | None:
        """The last place noted (``note_place``), or None: none, or a file
        that is no such note (it is untrusted like any other)."""
        path = self.root / PLACE
        try:
            note = contract.parse_json(read_regular_file(path, limit=4096))
        except FileNotFoundError:
            return None
        except (OSError, contract.InvalidMessage) as exc:
            log.warning("%s: %s unusable (%s): judged as if there were none", self.WHAT, path, exc)
            return None
        if not (isinstance(note, dict) and type(note.get("event_id")) is str
                and type(note.get("topic")) is str
                and all(type(note.get(k)) is int and 0 <= note[k] < _OFFSETS
                        for k in ("partition", "offset"))):
            log.warning("%s: %s is no place of a dead letter: judged as if there were none",
                        self.WHAT, path)
            return None
        return note

    def letters(self) -> list[dict[str, Any]]:
        """Every dead letter kept, oldest first (as they were published)."""
        return sorted(self.kept(TOPIC), key=lambda b: str(b.get("emitted_at", "")))

    def _names(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.root / TOPIC) if key_of(n) is not None]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _prune(self, keep: int) -> int:
        """Remove the oldest records down to ``keep``; how many are left."""
        directory = self.root / TOPIC
        aged = []
        for name in self._names():
            try:
                aged.append((os.lstat(directory / name).st_mtime_ns, name))
            except FileNotFoundError:
                continue
        aged.sort()
        gone = aged[:max(0, len(aged) - keep)]
        for _, name in gone:
            try:
                os.unlink(directory / name)
            except FileNotFoundError:
                pass
        if gone:
            log.info("%s: removed the %d oldest of %d kept dead letters (at most %d are kept)",
                     self.WHAT, len(gone), len(aged), self.capacity)
        return len(aged) - len(gone)
