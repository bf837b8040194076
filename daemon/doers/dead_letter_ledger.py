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
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.ledger_names import key_of
from calstream.daemon.doers.planner_ledger import KeyedLedger

log = logging.getLogger("calstream.publisher")

TOPIC = "deadletter"
CAPACITY = 10_000  # dead letters kept; at ~2-5 kB each, tens of MB at most


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
