"""When a file in the inbox may be announced: the watcher's decisions, pure.

The watcher (daemon/doers/inbox/watcher.py) looks at a tracked file in steps,
each costlier than the one before, and after each asks here what to do next:

1. ``after_stat``: a file its writer has closed (inotify close-write) or
   moved into the inbox, or one unchanged since it was announced whole, is
   looked at at once; any other (seen by a poll, a
   rescan or a modify event without a close) must keep its size, mtime,
   inode and ctime for ``settle_seconds`` so it is not read in the middle of
   a write. A file found short before keeps waiting, and is truncated once
   it has stayed short and unchanged for ``incomplete_timeout``;
2. ``after_structure``: the FITS layout must declare every HDU it holds and
   include the extensions an uncal file needs. This, not the settle time, is
   what keeps a file copied in pieces with long pauses from going out early;
3. ``after_identity``: the file must not have changed while it was read.

Every input is a fact the watcher gathered (a stat signature, a layout, an
error's text, the monotonic time); nothing here touches the filesystem.

Retries and their bounds (each wait is at most ``retry_max``, doubling from
``retry_initial``):

- a file that cannot be read (NFS hiccups) is tried ``UNREADABLE_ATTEMPTS``
  times, then rejected as unreadable;
- an unexpected error while handling a file is retried
  ``UNEXPECTED_ATTEMPTS`` times, then the file is left in the inbox and not
  looked at again until it changes (or the daemon restarts);
- a failed announcement is retried for as long as the file stays in the
  inbox: an arrival must never be lost, and the ledger is written only after
  the announcement succeeds. The bound is the inbox's own content;
- a file found short and unchanged is looked at less and less often (at
  most every ``INCOMPLETE_LOOK_MAX``; an event about it looks at once) until
  ``incomplete_timeout``;
- a failed rejection report is retried likewise, for at most
  ``MAX_PENDING_REPORTS`` rejections at once (the file and its
  ``.reason.txt`` in the quarantine directory stay the record of the others).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# Sig: size, mtime_ns, inode, ctime_ns; NOT_A_FILE: the size of a FIFO,
# socket, device or directory named like a file.
from calstream.steps.admitted_input import NOT_A_FILE, Sig
from calstream.steps.exposure import (
    UNCAL_REQUIRED_EXTENSIONS,
    BadExposure,
    incomplete_reason,
    size_problem,
    uncal_name,
)
from calstream.steps.fitsfile import FitsLayout, FitsStatus

UNREADABLE_ATTEMPTS = 5
UNEXPECTED_ATTEMPTS = 8
MAX_PENDING_REPORTS = 1000
INCOMPLETE_LOOK_MAX = 4.0  # seconds between looks at a short file that does not change


@dataclass(frozen=True)
class InboxRules:
    settle_seconds: float = 0.5
    incomplete_timeout: float = 120.0
    retry_initial: float = 1.0
    retry_max: float = 60.0
    required_extensions: tuple[str, ...] = UNCAL_REQUIRED_EXTENSIONS
    # How often a tracked file is looked at: the safety net when events are
    # missed, and the clock for the settle and incomplete timeouts.
    look_interval: float = 0.25

    def backoff(self, failures: int) -> float:
        return min(self.retry_max, self.retry_initial * 2 ** max(0, failures - 1))


def look_interval(settle_seconds: float, poll_interval: float) -> float:
    return max(0.02, min(settle_seconds / 2, poll_interval, 1.0))


@dataclass(frozen=True)
class FileState:
    """What the watcher knows of one tracked file between two looks."""

    sig: Sig | None = None
    changed_at: float = 0.0  # monotonic; when sig last changed
    # Changed while tracked: still being written (or replaced), so a live
    # arrival even if a start-up scan found it.
    rewritten: bool = False
    incomplete_sig: Sig | None = None  # sig at which the structure was found short
    incomplete_reason: str = ""
    identified: bool = False  # name, header and digest read: only the announcement is left
    failures: int = 0  # unreadable attempts, or failed announcements once identified
    unexpected: int = 0  # unexpected errors since the content last changed
    # Judged bad, its move parked (the quarantine refused it for now): moved
    # as judged at the next look while its stat stays, unread.
    refused: Reject | None = None


# ------------------------------------------------------------ decisions


@dataclass(frozen=True)
class Forget:
    """Stop tracking. ``still_there``: remember the file as handled, so events
    and rescans leave it alone until it changes."""

    still_there: bool
    why: str = ""  # worth a debug line
    gave_up: bool = False  # worth an error line: it will not be looked at again as it is


@dataclass(frozen=True)
class Wait:
    until: float  # monotonic; look again then
    note: str = ""  # worth a log line (said once per reason)


@dataclass(frozen=True)
class CheckStructure:
    """Settled: read the FITS layout next."""


@dataclass(frozen=True)
class ReadIdentity:
    """Whole: read the header and the digest next."""


@dataclass(frozen=True)
class Announce:
    pass


@dataclass(frozen=True)
class Reject:
    reason: str
    digest: str | None = None  # when known: lets an operator tell redeliveries apart


@dataclass(frozen=True)
class RetryLater:
    at: float  # monotonic
    delay: float


Decision = Forget | Wait | CheckStructure | ReadIdentity | Announce | Reject | RetryLater


# ------------------------------------------------------------ the steps


def after_stat(
    state: FileState,
    *,
    name: str,
    sig: Sig | None,
    handled_sig: Sig | None,
    now: float,
    age: float,
    rules: InboxRules,
    writer_done: bool = False,
    link_outside: str | None = None,
    done_before: bool = False,
) -> tuple[FileState, Decision]:
    """``sig``: the file's stat now (None: gone); ``handled_sig``: its stat
    when it was last handled, if it is still in the inbox; ``age``: wall-clock
    seconds since its mtime; ``writer_done``: there is no write to wait out
    (the last event about it said its writer closed it or moved it in, or
    it is as it was when last announced whole). The structure check still
    decides whether it is whole, and the identity read whether it changed
    meanwhile. ``link_outside``: where the file leads, a symbolic link out
    of the inbox's roots. ``done_before``: found by a start's scan as the
    ledger recorded it announced (the same stat), and its products exist."""
    if sig is None:
        return state, Forget(still_there=False, why="gone from the inbox before it was handled")
    if link_outside is not None:
        # Never read: the door would hash and announce a file outside its
        # roots, which the admission then refuses, at every start again.
        return replace(state, sig=sig, changed_at=now), Reject(
            f"{name}: a symbolic link to {link_outside}, outside the inbox's roots: not read")
    if sig[0] == NOT_A_FILE:
        # The state keeps its stat, so the watcher remembers it was handled.
        return replace(state, sig=sig, changed_at=now), Reject(f"{name}: not a regular file (a FIFO, socket, device or directory "
                             "named like an exposure): nothing to calibrate")
    if done_before and state.sig is None:
        # Read again, hashed from the ledger and its row written again, each
        # of an unarchived inbox's files held every new arrival at a start:
        # with 2,000 of them a new file waited ~30 s.
        # Its stat kept: remembered as handled, so a rescan leaves it alone.
        return replace(state, sig=sig, changed_at=now), DONE_BEFORE
    if sig != state.sig:
        first = state.sig is None
        if first and handled_sig == sig:
            return state, Forget(still_there=True)  # an event about a file already handled
        # A file already older than the settle time (found at start-up or by
        # a rescan) needs no further wait.
        changed_at = now - max(0.0, min(age, rules.settle_seconds)) if first else now
        state = FileState(sig=sig, changed_at=changed_at, rewritten=state.rewritten or not first)
    if state.refused is not None:
        # Its move parked: read and hashed again at every re-check (a 40 GB
        # file every park_recheck_seconds, for as long as the quarantine
        # refused it), though unchanged since it was judged.
        return state, state.refused
    settled_at = state.changed_at + (0.0 if writer_done else rules.settle_seconds)
    if now < settled_at:
        return state, Wait(min(settled_at, now + rules.look_interval))
    if state.identified:
        return state, Announce()
    if state.incomplete_sig == sig:
        unchanged_for = now - state.changed_at
        if unchanged_for >= rules.incomplete_timeout:
            return state, Reject(
                f"{name}: truncated: {state.incomplete_reason}; unchanged for "
                f"{unchanged_for:.0f} s (incomplete_timeout {rules.incomplete_timeout:g} s)"
            )
        # Unchanged since it was found short: a write to it is an event, which
        # looks at it at once, so the looks back off (a quarter of the time it
        # has been unchanged, at most INCOMPLETE_LOOK_MAX: the bound on how late
        # a file is seen whole when every event is lost). Looked at every
        # look_interval, 5,000 short files kept the event loop so busy that a
        # whole file dropped among them was not announced within 20 s.
        backoff = min(INCOMPLETE_LOOK_MAX, max(rules.look_interval, unchanged_for / 4))
        return state, Wait(min(state.changed_at + rules.incomplete_timeout, now + backoff))
    try:
        uncal_name(name)
    except BadExposure as exc:
        return state, Reject(str(exc))
    return state, CheckStructure()


DONE_BEFORE = Forget(still_there=True, why="as announced before, and its products exist: "
                                           "not read")


def move_parked(state: FileState, decision: Reject) -> FileState:
    """``decision``, whose move the quarantine refused for now, kept for
    the next look at the file as it is (after_stat)."""
    return replace(state, refused=decision)


def is_done_before(decision: Decision) -> bool:
    return decision is DONE_BEFORE


def after_structure(
    state: FileState, *, name: str, sig: Sig, layout: FitsLayout, now: float, rules: InboxRules
) -> tuple[FileState, Decision]:
    if layout.size != sig[0]:
        return state, Wait(now)  # changed while we looked; start over
    if layout.status in (FitsStatus.NOT_FITS, FitsStatus.CORRUPT):
        return state, Reject(f"{name}: {layout.reason}")
    too_large = size_problem(layout)  # before the identity read, which would hash it
    if too_large:
        return state, Reject(f"{name}: {too_large}")
    reason = incomplete_reason(layout, rules.required_extensions)
    if reason:
        note = f"waiting: {reason}" if state.incomplete_sig is None else ""
        state = replace(state, incomplete_sig=sig, incomplete_reason=reason)
        return state, Wait(now + rules.look_interval, note)
    return state, ReadIdentity()


def after_identity(
    state: FileState, *, sig: Sig, sig_after_read: Sig | None, now: float
) -> tuple[FileState, Decision]:
    if sig_after_read != sig:
        return state, Wait(now)  # rewritten while we read it
    return replace(state, identified=True, failures=0), Announce()


def unless_changed(decision: Decision, *, sig: Sig, sig_now: Sig | None,
                   now: float) -> Decision:
    """A rejection judged from the file's bytes (not FITS, corrupt, a header
    no exposure has) stands only if the file is still as it was when the
    reads began (``sig``): a writer that truncated it (``cp`` over it) or
    rewrites it in place (``rsync --inplace``) is mid-write, and the bytes
    read were the old file's and the new one's, or a new one's first
    piece. Such a file is looked at again, as one seen changing by the walk
    or the digest is; quarantined, a good delivery became a ``bad_file``.
    Asked only of a rejection: no stat more for a good file."""
    if isinstance(decision, Reject) and sig_now != sig:
        return Wait(now)
    return decision


def after_read_error(
    state: FileState, *, name: str, error: str, now: float, rules: InboxRules
) -> tuple[FileState, Decision]:
    """NFS and friends have transient errors: a few tries before calling it bad."""
    state = replace(state, failures=state.failures + 1)
    if state.failures >= UNREADABLE_ATTEMPTS:
        return state, Reject(f"{name}: unreadable: {error}")
    return state, retry_after(state.failures, now=now, rules=rules)


def after_announce_failed(
    state: FileState, *, now: float, rules: InboxRules
) -> tuple[FileState, RetryLater]:
    state = replace(state, failures=state.failures + 1)
    return state, retry_after(state.failures, now=now, rules=rules)


def after_unexpected_error(
    state: FileState, *, now: float, rules: InboxRules
) -> tuple[FileState, Decision]:
    state = replace(state, unexpected=state.unexpected + 1)
    if state.unexpected >= UNEXPECTED_ATTEMPTS:
        return state, Forget(
            still_there=True,
            gave_up=True,
            why=f"giving up after {state.unexpected} unexpected errors; left in the inbox "
            "until it changes",
        )
    return state, retry_after(state.unexpected, now=now, rules=rules)


def retry_after(failures: int, *, now: float, rules: InboxRules) -> RetryLater:
    delay = rules.backoff(failures)
    return RetryLater(at=now + delay, delay=delay)
