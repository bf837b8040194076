"""Where the broker put the newest record of a kind that this daemon sent.

A broker can lose its records and keep answering: a Kafka node restored
from an old disk, a topic deleted and made again, another daemon's
embedded broker started again. A topic that is merely "not empty" then
proves nothing: one record sent since (a run that ended, another
daemon's put back first) hides the loss. The place of a record sent
before does not: a topic that no longer holds it there (it ends before
it, or holds another record there) lost it, while one whose retention
removed it did not (broker_recovery.py). The dead letters
(dead_letter_ledger.py) and the product events (the planner's ledger)
each keep such a note.

A hint, not synced: a note lost with the machine, or unreadable, leaves
the judging to the topic being empty, as before there were notes; so a
failed write is warned about and never fails the send it follows.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from calstream.daemon.doers.durable_files import write_json_atomically
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.steps.regular_files import read_regular_file
from calstream.topics import contract

log = logging.getLogger("calstream.publisher")

_OFFSETS = 2 ** 63  # Kafka's offsets are signed 64-bit


class NotedPlace:
    """``path``: the note's file; ``what``: what is noted, for the log
    ("dead-letter ledger place"); ``root``: the directory every write lies in."""

    def __init__(self, path: Path, what: str, root: Path):
        self.path, self.what, self.root = path, what, root
        self._lock = threading.Lock()  # the daemon's loop and the planner's thread send

    def note(self, event_id: str, topic: str, partition: int, offset: int) -> None:
        """Where the broker put record ``event_id``."""
        try:
            with self._lock:
                write_json_atomically(self.path, {
                    "event_id": event_id, "topic": topic, "partition": partition,
                    "offset": offset}, what=self.what, root=self.root, sync=False)
        except OSError as exc:
            log.warning("%s: the place of %s not noted in %s (%s)", self.what,
                        str(event_id)[:64], self.path.parent, exc)

    def newest(self) -> dict[str, Any] | None:
        """The last place noted, or None: none, or a file that is no such
        note (it is untrusted like any other)."""
        try:
            note = contract.parse_json(read_regular_file(self.path, limit=4096))
        except FileNotFoundError:
            return None
        except (OSError, contract.InvalidMessage) as exc:
            log.warning("%s: %s unusable (%s): judged as if there were none", self.what,
                        self.path, exc)
            return None
        if not (isinstance(note, dict) and type(note.get("event_id")) is str
                and type(note.get("topic")) is str
                and all(type(note.get(k)) is int and 0 <= note[k] < _OFFSETS
                        for k in ("partition", "offset"))):
            log.warning("%s: %s is no record's place: judged as if there were none",
                        self.what, self.path)
            return None
        return note


PRODUCTS_PLACE = "products-newest-place.json"  # in the planner ledger's root


def product_events_place(work_dir: Path) -> NotedPlace:
    """The note of the newest product event a daemon with the planner role
    sent or put back: its recovery judges the products topic by it."""
    return NotedPlace(PlannerLedger(work_dir).root / PRODUCTS_PLACE,
                      "product events' place", work_dir)
