"""Whether a partition still holds a record where it was put: judged from
what one fetch at that offset answers (doers/kafka/topic_reader.record_at).

A client asked for an offset outside the partition's range starts at its
beginning (``auto_offset_reset="earliest"``), so the first record it reads,
or the watermark it is told, says on which side of the range the offset
lies: beyond the end the broker lost it (restarted empty, the topic
recreated), before the beginning retention removed it, which is no loss.
"""

from __future__ import annotations

FOUND, GONE, EXPIRED = "found", "gone", "expired"


def place_verdict(offset: int, first: int | None, high: int | None,
                  position: int | None) -> str | None:
    """FOUND, GONE or EXPIRED for the record asked for at ``offset``, or None
    (not known yet: fetch again). ``first``: the offset of the first record
    the fetch returned (None: none); ``high``: the partition's high
    watermark as the fetch response told it (None: no response yet);
    ``position``: where the client stands after the fetch."""
    if first is not None:
        return FOUND if first == offset else EXPIRED if first > offset else GONE
    if high is None:
        return None
    if high <= offset:
        return GONE  # it ends before the place: what was there is gone
    if position is not None and position >= high:
        return EXPIRED  # nothing left to read, and the range ended after it
    return None
