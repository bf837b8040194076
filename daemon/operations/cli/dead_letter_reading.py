"""The dead letters a ``calstream deadletters`` command needs, and no more.

The deadletter topic keeps months of letters (100k-1M, each up to 64 KiB).
``list`` read them all before printing the first; now it reads each
partition from its end back, a window at a time (doers/kafka/newest_first.py),
and stops at ``--limit`` letters picked by the filters or once the records
are older than ``--since`` (by their broker timestamps: ``offsets_for_times``
is wrong on tansu, and a letter is produced after it is made, so a record
older than ``--since`` holds a letter older still; the reading goes on
``CLOCK_BEHIND_MS`` further back). ``show`` and ``redrive``
of a PARTITION:OFFSET read that one record. An event id prefix can be
anywhere on the topic: it is looked for newest first, up to the second
letter it names (then it is ambiguous); only the letters picked are held.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from calstream.daemon.doers import kafka
from calstream.daemon.doers.kafka.newest_first import NewestFirst
from calstream.daemon.operations.dead_letter_redrives import RedriveReading
from calstream.daemon.operations.logs import escape_controls
from calstream.topics import contract
from calstream.topics.catalog import Topics

_PLACE = re.compile(r"^(\d{1,9}):(\d{1,19})$")


@dataclass(frozen=True)
class DeadLetter:
    ref: str  # "PARTITION:OFFSET" on the deadletter topic
    body: dict
    redrives: tuple[dict, ...] = ()  # the redrive headers found on the original's topic
    copies: tuple[str, ...] = ()  # the places of earlier records of the same dead letter


def named(letter: DeadLetter, ref: str) -> bool:
    """Whether ``ref`` (PARTITION:OFFSET or an event id prefix) names ``letter``."""
    return letter.ref == ref or ref in letter.copies or letter.body["event_id"].startswith(ref)


@dataclass
class Loaded:
    letters: list[DeadLetter]  # newest first
    records_read: int = 0  # records fetched from the deadletter topic (seen by tests)
    older: int = 0  # records below what was read, not read (0: read to the beginning)
    cut: str | None = None  # "limit" or "since": why the reading stopped early
    problems: list[str] = field(default_factory=list)  # REFs that name no one letter


def _letter(record) -> DeadLetter | None:
    try:
        message = contract.decode(record.value, expected="dead_letter")
    except contract.InvalidMessage:
        return None
    return DeadLetter(f"{record.partition}:{record.offset}", message.body)


# A record's timestamp is its producer's clock (CreateTime): a redrive's
# put-back is stamped by the operator's host. One stamped by a clock that
# is behind lies at its partition's end with an older time than the newer
# letters below it, and stopping at it hid those letters from --since.
# Records up to this much older than --since are read past (not shown).
CLOCK_BEHIND_MS = 3_600_000


# Why a deadletter topic the broker does not list is an error, not "no dead
# letters": a broker that restarted lists no topic until a daemon has
# created them again (the embedded one keeps its records in memory, and the
# daemon puts its dead letters back after that), and one that comes back
# may not list a topic yet (aiokafka drops a topic answered with an error,
# LEADER_NOT_AVAILABLE). `list --pending` printed [] then, exit 0: nothing
# pending, said to an operator while the letters were on their way back.
NOT_THERE = ("the broker lists no such topic (yet): a daemon creates it at its start and, "
             "after a broker restart, puts its dead letters back: run the command again in a "
             "moment, or check --topic-prefix")


async def load(cfg, topics: Topics, *, keep: Callable[[DeadLetter], bool] = lambda _: True,
               limit: int | None = None, since: dt.datetime | None = None,
               pending: bool = False) -> Loaded:
    """The newest dead letters ``keep`` picks (at most ``limit``; those not
    redriven if ``pending``), none older than ``since``, each once (its
    latest record, with the places of the earlier ones read as ``copies``),
    with the redrives made of them (dead_letter_redrives.py)."""
    reading = RedriveReading()
    picked: dict[str, DeadLetter] = {}
    redriven: set[str] = set()  # dropped for --pending: their earlier records are not new
    since_ms = since.timestamp() * 1000 if since else None
    out = Loaded([])
    async with NewestFirst(cfg, topics.name("deadletter"),
                           when=lambda r: (r.timestamp, r.offset)) as reader:
        if not reader.begin:
            raise kafka.TopicsMissing({topics.name("deadletter"): NOT_THERE})
        while True:
            if limit and len(picked) >= limit:
                if pending:  # marks known only once read: drop the redriven, read on
                    kept = await _unredriven(cfg, topics, reading, picked)
                    redriven.update(set(picked) - set(kept))
                    picked = kept
                if len(picked) >= limit:
                    out.cut = "limit"
                    break
            record = await reader.next()
            if record is None:
                break
            # Older than --since: not shown, but read on a while, for the
            # newer letters that may lie below it (CLOCK_BEHIND_MS), and its
            # redrive marks are still read.
            older = since_ms is not None and record.timestamp < since_ms
            if older and record.timestamp < since_ms - CLOCK_BEHIND_MS:
                out.cut = "since"
                out.older = 1
                break
            letter = _letter(record)
            if letter is None:
                continue
            event_id = letter.body["event_id"]
            reading.notes.on_letter(record.headers, event_id)
            if event_id in picked:  # an earlier record of a letter emitted again
                picked[event_id] = replace(picked[event_id],
                                           copies=(*picked[event_id].copies, letter.ref))
            elif not older and event_id not in redriven and keep(letter):
                picked[event_id] = letter
        out.records_read, out.older = reader.records_read, out.older + reader.left()
    if pending:
        picked = await _unredriven(cfg, topics, reading, picked)
    out.letters = await _marked(cfg, topics, reading, list(picked.values()))
    return out


async def _marked(cfg, topics: Topics, reading: RedriveReading,
                  letters: list[DeadLetter]) -> list[DeadLetter]:
    await reading.update(cfg, topics, [letter.body for letter in letters])
    return [replace(letter, redrives=reading.notes.of(letter.body["event_id"]))
            for letter in letters]


async def _unredriven(cfg, topics: Topics, reading: RedriveReading,
                      picked: dict[str, DeadLetter]) -> dict[str, DeadLetter]:
    marked = await _marked(cfg, topics, reading, list(picked.values()))
    return {letter.body["event_id"]: letter for letter in marked if not letter.redrives}


async def named_letters(cfg, topics: Topics, refs: list[str]
                        ) -> tuple[list[DeadLetter], list[str]]:
    """The dead letter each of ``refs`` names, and why those that name none
    or several do not: a PARTITION:OFFSET is one record read; an event id
    prefix is looked for newest first until a second letter has it."""
    found: dict[str, DeadLetter] = {}  # read at their place: their redrives still unread
    marked: dict[str, DeadLetter] = {}  # found by prefix: read with their redrives
    problems = []
    reading = RedriveReading()
    for ref in refs:
        place = _PLACE.match(ref)
        if place:
            record = await kafka.record_at(cfg, topics.name("deadletter"), int(place[1]),
                                           int(place[2]))
            letter = _letter(record) if not isinstance(record, str) else None
            if letter is not None:
                reading.notes.on_letter(record.headers, letter.body["event_id"])
                found.setdefault(letter.body["event_id"], letter)
                continue
            matches = []
        else:
            matches = (await load(cfg, topics, keep=lambda letter, r=ref: named(letter, r),
                                  limit=2)).letters
        if len(matches) == 1:
            marked.setdefault(matches[0].body["event_id"], matches[0])
        else:
            problems.append(ref_problem(ref, len(matches)))
    letters = await _marked(cfg, topics, reading, [
        letter for event_id, letter in found.items() if event_id not in marked])
    return [*letters, *marked.values()], problems


def ref_problem(ref: str, found: int) -> str:
    """Why ``ref`` names no dead letter (a typo, a place on a topic that lost
    it), or several (an event id prefix too short: `redrive 1` took every id
    starting with 1; looked for up to the second one only), escaped."""
    if not found:
        return escape_controls(f"no dead letter is {ref} (`calstream deadletters list` shows "
                               "each one's PARTITION:OFFSET)")
    return escape_controls(f"{ref} names {found} or more dead letters; give one "
                           "PARTITION:OFFSET or a longer event id")


def cut_note(loaded: Loaded, limit: int | None) -> str | None:
    """What ``list`` says when it did not read the whole topic."""
    if not loaded.cut or not loaded.older:
        return None
    if loaded.cut == "since":
        return "older dead letters (before --since) were not read"
    return (f"{loaded.older} more older record(s) on the deadletter topic not read: "
            f"--limit (now {limit}; 0 for all) or --since to see them")


# What the JSON of `list` and `show` says of a letter besides its body: read
# from the topic and the letter's place, never from the body.
_SAID_BY_US = ("ref", "redrives", "copies")


def letter_json(letter: DeadLetter, *, copies: bool = True) -> dict:
    """A dead letter as `list --json` and `show` print it. Its body is
    anyone's (the schema lets a letter carry fields of its own): a forged
    ``"ref": "0:0"`` was printed as the letter's place, and a script that
    redrove what it picked by ``.ref`` redrove another letter."""
    out = {"ref": letter.ref, **{k: v for k, v in letter.body.items() if k not in _SAID_BY_US},
           "redrives": list(letter.redrives)}
    if copies:
        out["copies"] = list(letter.copies)
    return out
