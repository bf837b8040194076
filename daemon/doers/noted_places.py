"""Where the broker put the newest record of a kind that this daemon sent
(of each partition of its topic), or, where it sent none, the last records
its topic held when first looked at (broker_recovery.py).

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
failed write is warned about and never fails the send it follows, and an
unanswered one is left behind after its time (Publisher._backed_up).
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
    ("dead-letter ledger place"); ``root``: the directory every write lies in.

    The newest record's place, and the newest of each other partition of
    its topic (``partitions``): a broker can lose one partition and keep the
    others (a Kafka node that alone held it, restored from an old disk), and
    a note of the newest record alone, on another partition, hid that loss."""

    def __init__(self, path: Path, what: str, root: Path):
        self.path, self.what, self.root = path, what, root
        self._lock = threading.Lock()  # the daemon's loop and the planner's thread send
        self._known: list[dict[str, Any]] | None = None  # places(), as last written

    def note(self, event_id: str, topic: str, partition: int, offset: int) -> None:
        """Where the broker put record ``event_id``: the newest of its partition now."""
        with self._lock:
            known = self.places() if self._known is None else self._known
            self._write([_place(event_id, topic, partition, offset),
                         *(k for k in known if k["topic"] == topic
                           and k["partition"] != partition)])

    def note_all(self, places: list[tuple[str, str, int, int]]) -> None:
        """The newest record of each partition of a topic, as (event id,
        topic, partition, offset), the newest of all first: every other
        place noted is forgotten (the topic was read whole)."""
        if places:
            with self._lock:
                self._write([_place(*p) for p in places])

    def _write(self, places: list[dict[str, Any]]) -> None:
        newest, by_partition = places[0], {}
        for p in places:
            by_partition.setdefault(str(p["partition"]), [p["event_id"], p["offset"]])
        try:
            write_json_atomically(self.path, {**newest, "partitions": by_partition},
                                  what=self.what, root=self.root, sync=False)
        except OSError as exc:
            log.warning("%s: the place of %s not noted in %s (%s)", self.what,
                        str(newest["event_id"])[:64], self.path.parent, exc)
            self._known = None  # the file holds what it held: read again next time
            return
        self._known = places

    def newest(self) -> dict[str, Any] | None:
        """The last place noted, or None: none, or a file that is no such
        note (it is untrusted like any other)."""
        places = self.places()
        return places[0] if places else None

    def places(self) -> list[dict[str, Any]]:
        """The places noted, the newest first, then the newest of each other
        partition of its topic; none if the file is none or no such note."""
        try:
            note = contract.parse_json(read_regular_file(self.path, limit=_NOTE_BYTES))
        except FileNotFoundError:
            return []
        except (OSError, contract.InvalidMessage) as exc:
            log.warning("%s: %s unusable (%s): judged as if there were none", self.what,
                        self.path, exc)
            return []
        if not (isinstance(note, dict) and _valid(note)):
            log.warning("%s: %s is no record's place: judged as if there were none",
                        self.what, self.path)
            return []
        newest = _place(note["event_id"], note["topic"], note["partition"], note["offset"])
        others = note.get("partitions")
        others = others if isinstance(others, dict) else {}
        found = [newest]
        for partition, (event_id, offset) in (
                (k, v) for k, v in list(others.items())[:_PARTITIONS]
                if isinstance(v, list) and len(v) == 2):
            other = {"event_id": event_id, "topic": note["topic"],
                     "partition": int(partition) if partition.isdigit() else -1,
                     "offset": offset}
            if _valid(other) and other["partition"] != newest["partition"]:
                found.append(other)
        return found


_NOTE_BYTES = 1 << 16
_PARTITIONS = 256  # a note's partitions read, at most


def _place(event_id: str, topic: str, partition: int, offset: int) -> dict[str, Any]:
    return {"event_id": event_id, "topic": topic, "partition": partition, "offset": offset}


def _valid(note: dict[str, Any]) -> bool:
    return (type(note.get("event_id")) is str and type(note.get("topic")) is str
            and all(type(note.get(k)) is int and 0 <= note[k] < _OFFSETS
                    for k in ("partition", "offset")))


PRODUCTS_PLACE = "products-newest-place.json"  # in the planner ledger's root


def product_events_place(work_dir: Path) -> NotedPlace:
    """The note of the newest product event a daemon with the planner role
    sent or put back: its recovery judges the products topic by it."""
    return NotedPlace(PlannerLedger(work_dir).root / PRODUCTS_PLACE,
                      "product events' place", work_dir)
