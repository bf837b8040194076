"""The times an operator gives a command (``--since``, ``--until``): an ISO
time, a date, or an age. One parser for every command, so that what
`deadletters list --since 2h` takes, `replay --since 2h` takes too (it
refused it: "'2h' is not a time")."""

from __future__ import annotations

import datetime as dt
import re

from calstream.topics import contract

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class NotATime(ValueError):
    pass


def parse_when(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO time or a date (a time without a zone is UTC), or an age such
    as 30m, 2h, 1d: that long before ``now`` (by default the clock's)."""
    match = _AGE.match(text.strip())
    if match:
        now = now or dt.datetime.now(dt.UTC)
        try:  # an age no date can hold (a typo's 99999999999d) is refused, not raised
            return now - dt.timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        except OverflowError:
            raise NotATime(f"{text!r} is too far back: no date is that old") from None
    try:
        when = contract.parse_time(text)
    except (ValueError, TypeError):
        raise NotATime(f"{text!r} is neither an ISO time (2026-12-01T10:00:00Z) nor an age "
                       "(30m, 2h, 1d)") from None
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    try:  # a time at the calendar's edge whose zone takes it past (`0001-01-01T00:00+14:00`)
        when.astimezone(dt.UTC)
    except OverflowError:  # was raised out of `replay` (its id, its report) after the scan
        raise NotATime(f"{text!r} is not a time of the years 1 to 9999 in UTC") from None
    return when
