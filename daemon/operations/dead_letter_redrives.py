"""Which dead letters were redriven: one reading for ``calstream deadletters``,
``calstream status`` and the console.

A redrive is marked by a ``calstream-redrive`` header on the record it
re-sent, on the original's topic, and by the same header on the dead letter's
own record when a daemon put it back after a broker lost it
(topics/dead_letters.py). A mark counts only on the letter's own original
(``is_own_original``): anyone who may write a topic may put one on a record
of theirs. status and the console counted every dead letter as needing
attention, redriven or not, while ``deadletters list`` told them apart:
an observation whose failures were all handled still read "3 dead letters".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from calstream.daemon.deciders.redrive_reading import (
    LOST_TAIL,
    Place,
    lowest_originals,
    starts,
)
from calstream.daemon.doers import kafka
from calstream.daemon.stages import STAGES
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import (
    REDRIVE_HEADER,
    is_own_original,
    redrive_marks,
    redrive_note,
)

REDRIVES = "_redrives"  # the count a status or console dead letter carries of its redrives


def redrivable_topics(topics: Topics) -> set[str]:
    """The topics a redrive may write: those calstream consumes. A dead letter
    is a record like any other (a forged one could name any topic)."""
    logical = {t for st in STAGES for t in (st.live_topic, st.replay_topic)}
    return {topics.name(t) for t in logical | {"products", "pointing", "plans"}}


class RedriveNotes:
    """The redrive notes found, per dead letter's event id; one redrive found
    in two places (the original's topic, the letter put back) counts once."""

    def __init__(self) -> None:
        self._by_letter: dict[str, dict[tuple[str, ...], dict]] = {}

    def add(self, note: dict) -> None:
        same = tuple(str(note.get(k)) for k in ("at", "by", "reason"))
        self._by_letter.setdefault(str(note.get("dead_letter", "")), {}).setdefault(same, note)

    def on_letter(self, headers, event_id: str) -> None:
        """The marks a dead letter's own record carries (put back with it)."""
        for mark in redrive_marks(headers):
            if mark["dead_letter"] == event_id:  # of this dead letter only
                self.add(mark)

    def of(self, event_id: str) -> tuple[dict, ...]:
        return tuple(self._by_letter.get(event_id, {}).values())

    def keep_only(self, event_ids: set[str]) -> None:
        """Forget the notes of dead letters no longer listed (memory bounded)."""
        self._by_letter = {k: v for k, v in self._by_letter.items() if k in event_ids}


class RedriveReading:
    """The redrive marks on the originals' topics of the dead letters listed,
    read from the lowest original per partition (deciders/redrive_reading.py)
    and, kept between reads (the console rebuilds every few seconds), on from
    where the last read got to: only what was appended since. Only the notes
    of the letters listed, and the places they name, are kept."""

    def __init__(self, budget: float | None = None) -> None:
        # Seconds a look may spend reading (None: no limit of its own): the
        # console's first look at months of a topic would otherwise take its
        # whole broker view past its timeout; each look reads on from there.
        self.budget = budget
        self.notes = RedriveNotes()
        self.read_to: dict[Place, int] = {}  # per place, the next offset to read
        self._seen: set[str] = set()  # letters whose places were read from their original
        # Places whose read_to is still a letter's start, none of it read (a
        # read cancelled before its first record): still untrusted.
        self._unread: set[Place] = set()
        self.records_read = 0  # what the reads fetched, all told (seen by tests)

    async def update(self, cfg, topics: Topics, letters: Iterable[dict[str, Any]]) -> None:
        """The marks of ``letters`` (bodies) appended since the last read."""
        letters = [b for b in letters if isinstance(b, dict)]
        allowed = redrivable_topics(topics)
        listed = {str(b.get("event_id")) for b in letters}
        start = starts(lowest_originals(letters, allowed),
                       lowest_originals([b for b in letters
                                         if str(b.get("event_id")) not in self._seen], allowed),
                       self.read_to)
        self.notes.keep_only(listed)
        read_to = self.read_to
        # Where each read begins, before it does: a read cancelled part-way
        # (collect's timeout) left read_to at what it had read, nothing more.
        self.read_to, self._seen = dict(start), listed
        originals: dict[str, list[dict]] = {}
        for b in letters:
            originals.setdefault(str(b.get("event_id")), []).append(b.get("original"))
        # A start a letter gave (not where a read got to) is untrusted: one
        # beyond its partition's end reads only a tail (redrive_reading.py).
        tails = {place: LOST_TAIL for place, offset in start.items()
                 if read_to.get(place) != offset or place in self._unread}
        self._unread = set(tails)
        self.read_to.update(await kafka.read_places(
            cfg, start, lambda batch: self._read(batch, originals), tails=tails))
        self._unread = set()

    def _read(self, records, originals: dict[str, list[dict]]) -> None:
        for record in records:
            self.records_read += 1
            self.read_to[(record.topic, record.partition)] = record.offset + 1
            self._unread.discard((record.topic, record.partition))
            for key, value in record.headers or ():
                note = redrive_note(value) if key == REDRIVE_HEADER else None
                # A mark counts on the letter's own original only.
                if note is not None and any(is_own_original(
                        original, record.topic, record.key, record.value)
                        for original in originals.get(str(note.get("dead_letter")), ())):
                    self.notes.add(note)


def pending(letters: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dead letters (as status reads them) not redriven: those that need someone."""
    return [d for d in letters if not d.get(REDRIVES)]
