"""What ``calstream deadletters redrive`` sends, and the check before it:
each letter's original re-published to its own partition, then the letter
put back with the same mark (deadletters.py says why)."""

from __future__ import annotations

import json
import sys

from calstream.daemon.deciders.redrive_reading import (
    original_place,
    pinned_partition,
    unproven_original,
)
from calstream.daemon.doers import kafka
from calstream.daemon.doers.kafka.publisher import record_refused
from calstream.daemon.operations.cli.dead_letter_reading import DeadLetter
from calstream.daemon.operations.logs import escape_controls
from calstream.topics import contract
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import REDRIVE_HEADER, original_bytes


def subject(body: dict) -> str:
    """What a dead letter is about, for its row: the exposure, else the
    original record's key, else the file's name (a watcher's bad_file whose
    name is no exposure name has neither)."""
    original = body.get("original")
    key = original.get("key") if isinstance(original, dict) else None
    path = body.get("path")
    return str(body.get("exposure_id") or key or (str(path).rsplit("/", 1)[-1] if path else ""))


def redrive_record(letter: DeadLetter, by: str, reason: str
                   ) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """What redriving ``letter`` sends: (topic, key, value, headers)."""
    original = letter.body["original"]
    value, _ = original_bytes(original)
    note = {"by": by, "reason": reason, "dead_letter": letter.body["event_id"],
            "dead_letter_ref": letter.ref, "at": contract.utc_now()}
    key = original.get("key")
    return (original["topic"], key.encode() if key is not None else None, value,
            [(REDRIVE_HEADER, json.dumps(note).encode())])


async def redrive(cfg, letters: list[DeadLetter], by: str, reason: str,
                  refused: list[str] | None = None) -> list[str]:
    """Re-publish each original, then put its dead letter back with the same
    mark; returns the refs sent. An original the broker refuses for what it
    is (too large for its topic now, a policy) is said on stdout as a letter
    that cannot be redriven, its ref added to ``refused``, and the others go
    on: sent again it is refused again. Before session 44 the first one
    stopped the command with aiokafka's traceback."""
    sent: list[str] = []
    refused = [] if refused is None else refused
    dead_letters = Topics(cfg.topic_prefix).name("deadletter")
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        await _send_each(producer, dead_letters, letters, by, reason, sent, refused)
    except BaseException:
        # Ctrl-C, or the broker gone half-way: said nothing of those sent.
        # Each was named as it went; running the same command again is safe
        # (a letter sent carries its mark: "already redriven", skipped).
        print(f"calstream: stopped after {len(sent)} of {len(letters)} dead letter(s) redriven "
              "(each named above as it went); the same command again redrives the rest: "
              "those sent are skipped as already redriven", file=sys.stderr, flush=True)
        raise
    finally:
        await producer.stop()
    return sent


async def _send_each(producer, dead_letters: str, letters: list[DeadLetter], by: str,
                     reason: str, sent: list[str], refused: list[str]) -> None:
    """Send each letter's original, then its letter marked, appending its ref
    to ``sent`` and naming it on stdout as it goes out (to ``refused``, and
    said, one the broker refuses)."""
    for letter in letters:
        topic, key, value, headers = redrive_record(letter, by, reason)
        again = letter_bytes(letter)
        # Back to the original's own partition, after it: where status
        # and the console look for its mark (deciders/redrive_reading.py).
        partition = pinned_partition(letter.body["original"],
                                     await producer.partitions_for(topic))
        try:
            await producer.send_and_wait(topic, value, key=key, headers=headers,
                                         partition=partition)
        except Exception as exc:  # noqa: BLE001 - a record's refusal said, the rest raised
            named = record_refused(exc, topic, (key or b"").decode("utf-8", "replace"))
            if named is None:
                raise
            # Not marked: nothing went, and the same command redrives it once
            # the topic takes it.
            refused.append(letter.ref)
            print(escape_controls(f"{letter.ref}: cannot be redriven: {named}"), flush=True)
            continue
        # The letter again, marked, as a daemon puts one back after a
        # broker loss: the planner reads the deadletter topic, not the
        # work topics, and counts a redriven stage-2 order in flight
        # again (deciders/stage2_failures.py); `list` finds the mark there
        # too. After the original: a mark never stands for a redrive not
        # sent. Its own partition: its records stay together.
        sent.append(letter.ref)
        print(f"{letter.ref}: re-published to {topic}", flush=True)
        own = int(letter.ref.split(":")[0])
        try:
            if again is not None:
                await producer.send_and_wait(
                    dead_letters, again, headers=headers,
                    key=subject(letter.body).encode("utf-8", "backslashreplace"),
                    partition=own if own in (await producer.partitions_for(dead_letters))
                    else None)
        except Exception as exc:  # noqa: BLE001 - the redrive itself went out
            # (an operator principal without write on deadletter, of before)
            print(f"calstream: {letter.ref}: redriven, but its dead letter was not put "
                  f"back ({escape_controls(str(exc))[:200]}): the planner still counts a "
                  "stage-2 order of it failed", file=sys.stderr)


async def unproven(cfg, letters: list[DeadLetter]) -> dict[str, str]:
    """ref -> why the original a letter carries is not shown to be the
    record at the place it names, for the letters where it is not."""
    places = {letter.ref: original_place(letter.body.get("original")) for letter in letters}
    found = await kafka.records_at(cfg, [p for p in places.values() if p is not None])
    problems = {letter.ref: unproven_original(letter.body["original"],
                                              found.get(places[letter.ref]))
                for letter in letters}
    return {ref: problem for ref, problem in problems.items() if problem}


def letter_bytes(letter: DeadLetter) -> bytes | None:
    """The letter as it was, to put back; None if it cannot be written again
    (a forged one's text no bytes encode: its mark stays on the original)."""
    try:
        return contract.encode(contract.Message("dead_letter", letter.body))
    except (contract.InvalidMessage, UnicodeEncodeError, ValueError):
        return None
