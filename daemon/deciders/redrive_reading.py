"""Where the originals' topics are read for redrive marks, and whether a
redrive's original is the record its topic held there (pure).

A redrive re-sends a dead letter's original to the original's own partition
(``pinned_partition``), after the original: so its mark is on that
partition, at an offset above ``original.offset``. The marks of the dead
letters listed are therefore all at or above, per (topic, partition), the
lowest original offset among them (``lowest_originals``): reading a topic of
months end to end, every ~5 s while a console page was open, found nothing
more. The console keeps where it read to and reads on from there
(``starts``). A topic recreated since (offsets begun again) is read from its
beginning by the reader once a start lies beyond its end (TopicReader.lost)
when that start is where a read of ours got to; when it is a letter's
original offset, only its last ``LOST_TAIL`` records: a letter is anyone's,
and a forged ``offset: 10**15`` made every look read a whole partition.
A redrive made after a topic was recreated, more than that many records
back, is then not seen (the daemon that read it keeps its mark with the
letter: topics/dead_letters.py). An offset below what retention kept costs
a read from what is left: what a real letter that old costs, bounded per
console look by its budget and read on from there at the next.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from calstream.daemon.deciders import record_places
from calstream.topics.dead_letters import is_own_original

Place = tuple[str, int]  # (topic, partition)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def lowest_originals(letters: Iterable[dict[str, Any]], topics: set[str]) -> dict[Place, int]:
    """Per (topic, partition) of ``topics``, the lowest original offset among
    ``letters`` (dead letters' bodies, untrusted: any other shape names no place)."""
    out: dict[Place, int] = {}
    for body in letters:
        original = body.get("original") if isinstance(body, dict) else None
        if not isinstance(original, dict) or original.get("topic") not in topics:
            continue
        partition, offset = original.get("partition"), original.get("offset")
        if _count(partition) and _count(offset):
            place = (original["topic"], partition)
            out[place] = min(out.get(place, offset), offset)
    return out


def starts(needed: dict[Place, int], new: dict[Place, int], read_to: dict[Place, int]
           ) -> dict[Place, int]:
    """Where to read each place of ``needed`` from: where the last read got
    to (``read_to``), or lower where a letter not seen before (``new``) has
    its original below that (its marks, read while it was not listed, were
    not kept); a place never read, from its lowest original. A place no
    letter names any more is not read."""
    return {place: min(read_to[place], new.get(place, read_to[place]))
            if place in read_to else lowest for place, lowest in needed.items()}


def pinned_partition(original: dict[str, Any], partitions: set[int] | None) -> int | None:
    """The partition a redrive of ``original`` goes to: its own, when the topic
    has it; None (the producer's partitioner) otherwise: a topic recreated with
    fewer partitions, or a forged letter. Left to the partitioner, a record
    without a key went to any partition, its mark where ``lowest_originals``
    does not look."""
    partition = original.get("partition")
    return partition if _count(partition) and partitions and partition in partitions else None


LOST_TAIL = 1000  # records read of a partition a letter's original offset lies beyond the end of


def original_place(original: Any) -> tuple[str, int, int] | None:
    """(topic, partition, offset) a dead letter says its original was read
    at; None if it names none (a letter made of no record, or forged)."""
    if not isinstance(original, dict) or not isinstance(original.get("topic"), str):
        return None
    partition, offset = original.get("partition"), original.get("offset")
    return (original["topic"], partition, offset) if _count(partition) and _count(offset) \
        else None


def unproven_original(original: dict[str, Any], found: Any) -> str | None:
    """Why the value a dead letter carries cannot be shown to be a record its
    topic held, to re-send it as its original; None when it can.

    A letter is anyone's to write, and a redrive sends what it carries, with
    the operator's rights, to a topic only the planner (or a stage) writes:
    a forged "original" was a work order the stages took as the planner's.
    So the record at the place it names (``found``: the record, or
    record_places' GONE or EXPIRED; anything when it names no place) must be
    its own original (``is_own_original``: topic, key, value digest)."""
    place = original_place(original)
    if place is None:
        return "the dead letter names no place of its original on its topic"
    where = f"{place[0]}[{place[1]}]@{place[2]}"
    if found == record_places.GONE:
        return (f"{where} no longer holds its original (the topic ends before it: a broker "
                "that lost its records, or the topic recreated)")
    if found == record_places.EXPIRED:
        return f"its original at {where} fell out of the topic's retention"
    if isinstance(found, str) or not is_own_original(
            original, place[0], getattr(found, "key", None), getattr(found, "value", None)):
        return (f"the record at {where} is not the original it carries (another key or "
                "value: a forged dead letter, or the topic recreated since)")
    return None
