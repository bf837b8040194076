"""What a replay keeps of its source topic as it reads it (pure).

A replay reads every record of its source up to "now" (doers/
replay_source.py). It held every one of them, decoded, until the end of the
read, and then chose: some 4 KB of Python objects per arrival (the door's
header copy), 412 MiB for a topic of 100,000 arrivals whatever the
selection (bench/replay_scan_memory.py, session 44; measured again in
session 46: 69 MiB now for a replay of one program in twenty, most of it
the bounded memo of parsed names, and 196 MiB for one of everything).
The sieve judges each record as it comes and keeps only what the replay
needs: the latest live record of each item the selection takes
(``Chooser``, the rule ``select`` applies), the names the product store is
asked about (an exposure's or an order's identity: a few dozen bytes
each), and the counts and partitions the report gives. So a replay holds what it will republish, not its topic;
and that packed as its JSON (replay_packed.py: 1.4 KB an arrival, not 3.7).

Of two records of one exposure on ``raw`` that say different things (its
file's path, digest, size or header), the file decides, not the later
time (session 45): the latest one was taken, and anyone may write the
topic; a forged later arrival (other bytes, another path, a header copy
that is not the file's) was republished in the real one's place, for
detector1 to call it stale or dead-letter it, and the exposure was never
replayed. ``judge`` reads the file (doers/replay_source.py): only for
such a pair, so a replay hashes a file only where its records disagree;
and only under the inbox roots: a command that knows none reads no file
a record names (any record may name any file), takes the later record as
before, and counts such exposures (``unjudged``, session 46).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from calstream.daemon.deciders.replay_packed import Packed, unpacked
from calstream.daemon.deciders.replay_selection import (
    Candidate,
    Chooser,
    PartitionScan,
    Selection,
    from_their_roots,
    record_time,
)
from calstream.steps.provenance import made_from
from calstream.topics import contract

# What an arrival claims of its file: two records of one exposure that
# claim the same are one content, and the later is taken as before.
_CLAIMS = ("path", "digest", "size", "header")
# ``judge``'s answers, ranked: the file's own, no file to tell by, not the file's.
_RANK = {True: 2, None: 1, False: 0}


def file_decides(judge: Callable[[dict[str, Any]], bool | None] | None,
                 unjudged: set[str] | None = None
                 ) -> Callable[[Candidate, Candidate], bool | None]:
    """``Chooser``'s ``prefer`` for arrivals: of the chosen record and a
    later one of the same exposure, the one ``judge`` ranks higher (True:
    its claims are the file's as it is now; False: the file is there and
    says otherwise; None: no file here to tell by); None (the time
    decides) if they claim the same or rank alike. ``judge`` None (the
    command knows no inbox roots, so no file a record names is read): the
    time decides, and the exposure goes into ``unjudged``, for the report."""
    def prefer(chosen: Candidate, later: Candidate) -> bool | None:
        first, then = unpacked(chosen.message), unpacked(later.message)
        if all(first.get(k) == then.get(k) for k in _CLAIMS):
            return None
        if judge is None:
            if unjudged is not None:
                unjudged.add(str(first.get("exposure_id")))
            return None
        ranks = _RANK[judge(first)], _RANK[judge(then)]
        return None if ranks[0] == ranks[1] else ranks[1] > ranks[0]
    return prefer


def packed(c: Candidate) -> Candidate:
    """``c`` as a replay holds a chosen one until it is sent (replay_packed.py)."""
    return replace(c, message=Packed(c.message))


class ScanSieve:
    """``take`` each record of a replay's source topic (a ConsumerRecord:
    partition, offset, timestamp, value); then ``chooser.result()``, the
    counts, ``scans`` and ``on_topic`` say what the replay needs.

    ``kind``: the message type replayed; ``roots``: ``from_their_roots``'s
    keyword arguments; ``prepare``: what a candidate is read as (its paths
    under a moved store's root); ``live_input``: ``select``'s; ``judge``:
    ``file_decides``'s, for arrivals (None: the later record is taken, and
    ``unjudged`` names the exposures whose records disagreed)."""

    def __init__(self, kind: str, selection: Selection, roots: dict[str, Any], *,
                 prepare: Callable[[Candidate], Candidate] = lambda c: c,
                 live_input: Callable[[str], bool] | None = None,
                 judge: Callable[[dict[str, Any]], bool | None] | None = None):
        self.schema = f"calstream.{kind}"
        self.raw = kind == "arrival"
        self.roots, self.prepare = roots, prepare
        self.unjudged: set[str] = set()
        self.chooser = Chooser(selection, live_input,
                               file_decides(judge, self.unjudged) if self.raw else None, packed)
        self.scans: dict[int, PartitionScan] = {}
        self.scanned = self.invalid = self.outside = 0
        # Live arrivals' exposure ids (raw), or orders' ``made_from``: what
        # the product store adds to or reports missing from the topic.
        self.on_topic: set[Any] = set()

    def partition(self, partition: int) -> PartitionScan:
        return self.scans.setdefault(partition, PartitionScan(partition, 0))

    def take(self, record: Any) -> None:
        scan = self.partition(record.partition)
        if scan.first_offset is None:
            scan.first_offset = record.offset
            scan.first_time = record_time(record.timestamp)
        try:
            message = contract.decode(record.value)
        except contract.InvalidMessage:
            self.invalid += 1  # the stage consumers dead-letter these
            return
        self.scanned += 1
        if message.get("schema") != self.schema:
            return
        c = self.prepare(Candidate(record.partition, record.offset, record.timestamp,
                                   message.body))
        if not from_their_roots([c], **self.roots)[0]:
            self.outside += 1
            return
        m = c.message
        if not self.raw:
            self.on_topic.add(made_from(m))
        elif not m.get("replay") and m.get("priority") != "replay":
            self.on_topic.add(m.get("exposure_id"))
        self.chooser.offer(c)
