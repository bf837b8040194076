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

    async def read_originals(self, cfg, topics: Topics, letters: Iterable[dict[str, Any]]) -> None:
        """The marks on the original records' topics of ``letters`` (bodies)."""
        originals: dict[str, list[dict]] = {}
        for b in letters:
            originals.setdefault(b["event_id"], []).append(b.get("original"))
        named = {(o or {}).get("topic") for found in originals.values() for o in found}
        for name in sorted(named & redrivable_topics(topics)):
            for record in await kafka.read_to_end(cfg, name):
                for key, value in record.headers or ():
                    note = redrive_note(value) if key == REDRIVE_HEADER else None
                    # A mark counts on the letter's own original only.
                    if note is not None and any(is_own_original(
                            original, record.topic, record.key, record.value)
                            for original in originals.get(str(note.get("dead_letter")), ())):
                        self.add(note)


def pending(letters: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dead letters (as status reads them) not redriven: those that need someone."""
    return [d for d in letters if not d.get(REDRIVES)]
