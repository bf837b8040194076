"""Flood control of repeated log lines: which to write, which to count.

A poison stream (100,000 malformed records, an inbox filled with junk) made
one warning per item: millions of lines, a full disk, and the one line about
a real fault buried among them. Every such item is still a dead letter on
its topic and counted in the metrics, so the log may summarise: per kind of
line (its call site, stage and category) the first ``burst`` of a window are
written, the rest counted, and one summary says how many were left out when
the window ends. Pure: the caller gives the time (tests inject it), and
which records are subject to this at all (operations/logs.py: warnings and
data faults, never infrastructure faults or errors).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

BURST = 20          # lines of one kind written per window
WINDOW = 60.0       # seconds
MAX_KINDS = 1000    # kinds tracked at once; beyond, new kinds share one
OVERFLOW = ("overflow",)  # the kind they share


@dataclass
class Summary:
    kind: Hashable
    suppressed: int
    seconds: float
    last: Any  # the last one left out (a log record), for the summary to name


@dataclass
class _Window:
    start: float
    written: int = 0
    suppressed: int = 0
    last: Any = None


class FloodWindows:
    """Per kind, a window opens at its first line and lasts ``window``
    seconds: ``burst`` lines are written in it, the rest counted."""

    def __init__(self, burst: int = BURST, window: float = WINDOW,
                 max_kinds: int = MAX_KINDS) -> None:
        self.burst, self.window, self.max_kinds = burst, window, max_kinds
        self._windows: dict[Hashable, _Window] = {}
        # The earliest end of a window with lines left out: ``ended`` is
        # called for every line and looks at no window before then.
        self.due = float("inf")

    def admit(self, kind: Hashable, now: float, item: Any = None) -> bool:
        """True: write this line of ``kind``; False: it is counted instead
        (``item``, the line, kept as the last one left out)."""
        w = self._windows.get(kind)
        if w is None or now - w.start >= self.window:
            if w is not None and w.suppressed:
                # Its summary is ``ended``'s to give; a caller that did not
                # ask first loses nothing but the order of the two lines.
                return self._counted(w, item)
            if w is None and kind != OVERFLOW and len(self._windows) >= self.max_kinds:
                self._forget_quiet(now)
                if len(self._windows) >= self.max_kinds:  # forged kinds: one share
                    return self.admit(OVERFLOW, now, item)
            w = self._windows[kind] = _Window(start=now)
        if w.written < self.burst:
            w.written += 1
            return True
        return self._counted(w, item)

    def _counted(self, w: _Window, item: Any) -> bool:
        w.suppressed += 1
        w.last = item
        self.due = min(self.due, w.start + self.window)
        return False

    def ended(self, now: float, *, all_of_them: bool = False) -> list[Summary]:
        """The summaries of the windows ended by ``now`` with lines left out
        (every window's with ``all_of_them``: at the end of the process);
        those kinds start afresh."""
        if now < self.due and not all_of_them:
            return []
        out, due = [], float("inf")
        for kind, w in list(self._windows.items()):
            if not w.suppressed:
                continue
            if all_of_them or now - w.start >= self.window:
                out.append(Summary(kind, w.suppressed, now - w.start, w.last))
                del self._windows[kind]
            else:
                due = min(due, w.start + self.window)
        self.due = due
        return out

    def _forget_quiet(self, now: float) -> None:
        for kind, w in list(self._windows.items()):
            if not w.suppressed and now - w.start >= self.window:
                del self._windows[kind]
