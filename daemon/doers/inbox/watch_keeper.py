"""The inbox's watch kept on the directory that is the inbox now.

inotify watches an inode, not a name. An inbox removed and made again, moved
aside for a new one, or a file system mounted over it (a downlink volume
remounted) left the observer watching a directory nobody delivers to, and a
polling observer stops for good when its directory goes: files were then
found only by the rescan, every 30 s, and nothing said why the fixed cost of
every exposure had grown a hundredfold. So every ``CHECK_SECONDS`` the
watcher stats the inbox (one stat, in a thread: a network file system may
be slow to answer) and compares it with the directory its observer was
started on. A different directory, or an observer that stopped, is watched
again and the inbox listed at once for what arrived unwatched. An inbox that
is gone is made again, as the start makes it; one that cannot be (its parent
gone, a full or read-only disk) is parked (``calstream_parked_items{stage=
"watcher"}``), retried with the parking's backoff, and resumed by itself.
So is an inbox whose stat does not return in time (its storage gone silent:
file_reads.py), which otherwise held the watcher's loop, unseen, until the
mount came back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from calstream.daemon.doers.file_reads import INBOX_HUNG, FileReads, ReadHung
from calstream.daemon.doers.inbox.observer_bridge import ObserverBridge
from calstream.daemon.doers.inbox.reports import log_fields
from calstream.daemon.doers.parking import Parking
from calstream.steps.failures import infrastructure_cause

log = logging.getLogger("calstream.watcher")

CHECK_SECONDS = 2.0  # a stat every 2 s costs nothing; a lost watch costs a rescan's wait
INBOX_GONE = "inbox_gone"  # the parking's cause when no disk fault explains it


class WatchKeeper:
    """``await check(now)`` when ``next_check`` is due: True when the inbox
    is watched anew (the caller lists it at once)."""

    def __init__(self, bridge: ObserverBridge, make_dirs: Callable[[], Awaitable[None]],
                 parking: Callable[[str], Parking] | None, reads: FileReads,
                 check_seconds: float = CHECK_SECONDS) -> None:
        self.bridge = bridge
        self.reads = reads  # its stat is timed as the files' reads are
        self.make_dirs = make_dirs  # the inbox (and the quarantine), as at the start: timed
        self.check_seconds = check_seconds
        self.next_check = time.monotonic() + check_seconds
        self._parking = parking("the inbox's watch") if parking is not None else None
        self._failing = False  # said once per outage when there is no parking to say it

    async def check(self, now: float) -> bool:
        self.next_check = now + self.check_seconds
        inbox = self.bridge.scope.inbox
        try:
            problem = await self.reads.timed(lambda _: self.bridge.watch_problem(), inbox,
                                             self.reads.read_seconds)
        except ReadHung as exc:
            self._failed(exc, "does not answer", INBOX_HUNG)
            return False
        if problem is None:
            if self._failing and self._parking is not None:
                self._parking.resumed()  # it answers again, and is the inbox watched
            self._failing = False
            return False
        try:
            # Timed as the stat: a mount gone silent just after it answered
            # held the watcher's loop, and a stop, in a thread no one could
            # cancel; so did an observer's stop waiting on its old, dead mount.
            await self.make_dirs()
            await self.bridge.rewatch()
        except ReadHung as exc:
            self._failed(exc, "does not answer", INBOX_HUNG)
            return False
        except OSError as exc:
            self._failed(exc, problem)
            return False
        log.warning("the inbox %s %s: watched again, and listed for what came meanwhile",
                    inbox, problem, extra=log_fields(None, inbox))
        self._failing = False
        if self._parking is not None:
            self._parking.resumed()
        return True

    def unanswered(self, exc: ReadHung) -> float:
        """A read of the inbox itself did not return in time (the start's
        listing): the inbox parked as hung; the seconds before trying again."""
        self._failed(exc, "does not answer", INBOX_HUNG)
        return max(self.check_seconds, self.next_check - time.monotonic())

    def _failed(self, exc: OSError | ReadHung, problem: str, cause: str | None = None) -> None:
        inbox = self.bridge.scope.inbox
        if self._parking is not None:
            cause = cause or infrastructure_cause(exc) or INBOX_GONE
            delay = self._parking.failed(cause, exc)
            self.next_check = time.monotonic() + max(delay, self.check_seconds)
        elif not self._failing:
            log.warning("the inbox %s %s and cannot be watched again yet (%s): re-tried every "
                        "%.0fs", inbox, problem, getattr(exc, "strerror", None) or exc,
                        self.check_seconds, extra=log_fields(None, inbox))
        self._failing = True
