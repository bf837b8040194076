"""The contract's times: RFC 3339 texts, written and read."""

from __future__ import annotations

import datetime as dt
import re
import time

_second: tuple[int, str] = (-1, "")  # a whole second and its text: written once a second


def utc_now() -> str:
    """``iso(datetime.now(UTC))``; the text of the second is written once a second."""
    global _second
    second, ms = divmod(time.time_ns() // 1_000_000, 1000)
    known = _second  # one read: another thread may replace it meanwhile
    if known[0] != second:
        known = _second = (second, iso(float(second))[:-5])
    return f"{known[1]}.{ms:03d}Z"


def iso(t: dt.datetime | float) -> str:
    if not isinstance(t, dt.datetime):
        t = dt.datetime.fromtimestamp(t, dt.UTC)
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_times: dict[str, dt.datetime] = {}  # recent texts and their times (datetimes never change)
# The planner checks a whole fetch's events (up to 128, two or three times
# each) before it decides the first: with room for 64 texts the check's
# were gone by the decision, which parsed emitted_at again (session 44).
TIMES_KEPT = 2048


def parse_time(s: str) -> dt.datetime:
    """The time an RFC 3339 text says. A product event's ``emitted_at`` is
    read three times (its check, the planner's decision, the bench), so the
    last texts (a few fetches' worth) are remembered."""
    known = _times.get(s) if type(s) is str else None
    if known is None:
        known = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        if type(s) is str:
            if len(_times) >= TIMES_KEPT:
                _times.clear()
            _times[s] = known
    return known


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)


def in_time_order(value: object) -> tuple[dt.datetime, str]:
    """A sort key: ``value``'s time, not its text. The contract allows any
    offset (``2026-12-07T10:30:00+02:00`` is before ``...T09:00:00Z``, which
    sorts after it as text); a value that says no time with a zone (absent,
    not text, not a date-time: a record read from disk is untrusted) sorts
    first, by its text. Not through ``parse_time``'s memory: a sort of a
    store's 20,000 records would empty it for the planner."""
    if type(value) is str:
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None:
            return when, ""
    return _EARLIEST, str(value)


# RFC 3339's date-time, "T" and "Z" in capitals as calstream writes them.
# fromisoformat alone took ISO 8601's other forms too ("20261124T000000Z",
# "2026-W48-2T00:00:00Z", "2026-11-24T00Z", a comma before the fraction),
# which RFC 3339 readers refuse: and an arrival's `detected_at` becomes its
# product event's `arrived_at`.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)", re.ASCII)


def check_date_time(value: str) -> None:
    """ValueError unless ``value`` is an RFC 3339 date-time, with a time zone,
    of a day the calendar has."""
    if _RFC3339.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time with a time zone")
    parse_time(value)
