"""What an operator does about work parked on an infrastructure fault: the
words for each cause, shown by ``calstream status`` and the console."""

from __future__ import annotations

from typing import Any

from calstream.daemon.deciders.broker_refusals import (
    BROKER_ERROR,
    TOPIC_NOT_AUTHORIZED,
    TOPIC_REFUSES_RECORD,
)
from calstream.daemon.doers.file_reads import INBOX_HUNG, STORE_HUNG, WORK_DIR_HUNG
from calstream.daemon.doers.inbox.watch_keeper import INBOX_GONE
from calstream.daemon.doers.start_waits import BROKER_UNREACHABLE, TOPICS_MISSING
from calstream.steps.failures import (
    CRDS_LOOKUP,
    CRDS_REFERENCE_CORRUPT,
    CRDS_REFERENCE_MISSING,
    CRDS_UNREACHABLE,
    DISK_FULL,
    MOUNT_GONE,
    READ_ONLY,
)

# What clears each cause (docs/operations.md, "Infrastructure faults"): the
# item resumes by itself once it is cleared; nothing to redrive.
NEXT_STEP = {
    DISK_FULL: "free space on the product store, the work directory or the scratch disk",
    READ_ONLY: "remount the product store (or the work directory) writable",
    MOUNT_GONE: "a network mount (the inbox, the product store, the CRDS cache) no longer serves "
                "its files (stale handle, transport gone): restore or remount it",
    BROKER_UNREACHABLE: "start the broker or restore the network to it",
    TOPICS_MISSING: "an admin creates the topics (calstream topics create)",
    CRDS_UNREACHABLE: "restore the CRDS server or mount the CRDS_PATH cache",
    CRDS_REFERENCE_MISSING: "put the missing reference file back under CRDS_PATH",
    CRDS_LOOKUP: "complete the CRDS cache for the pinned context (crds sync)",
    CRDS_REFERENCE_CORRUPT: "sync the cut reference again (crds sync --files NAME "
                              "--repair-files)",
    INBOX_GONE: "make the inbox directory again (mount its volume)",
    INBOX_HUNG: "the inbox's storage does not answer reads (a network mount gone silent): "
                "bring its server or mount back; the files resume by themselves",
    STORE_HUNG: "the product store's storage does not answer (a network mount gone silent: "
                "the watcher's look-ups, the start's making of the store): bring its server "
                "or mount back; what waits resumes by itself",
    TOPIC_NOT_AUTHORIZED: "the broker refuses this daemon's principal the topic (an ACL missing): "
                          "an admin grants it write (docs/operations.md, \"A record the broker "
                          "refuses\"); the items go on by themselves",
    TOPIC_REFUSES_RECORD: "the raw topic refuses arrivals calstream sends (its "
                          "max.message.bytes below 1048588, a policy): the files wait in the "
                          "inbox; an admin fixes the topic (docs/operations.md, \"A record the "
                          "broker refuses\") and they go on by themselves",
    BROKER_ERROR: "the broker refuses records without a reason (UNKNOWN_SERVER_ERROR): read "
                  "the broker's own log; the items go on by themselves once it accepts them",
    WORK_DIR_HUNG: "the work directory's storage does not answer (a network mount gone "
                   "silent: the watcher's ledger, the planner's ledger, the start's making of "
                   "the directory): bring its server or mount back; what waits resumes by "
                   "itself",
}


def next_step(cause: str) -> str:
    """What an operator does about items parked on ``cause`` (status, console)."""
    return NEXT_STEP.get(cause, "read the daemon log for its fault")


def parked_lines(parked: list[dict[str, Any]]) -> list[str]:
    """Items waiting on the disk or CRDS: they resume by themselves. Each
    with what clears it, and where the path is: a cause alone was nothing
    to act on at 3 a.m."""
    if not parked:
        return []
    return ["", "parked on an infrastructure fault (resumed by themselves when it clears):"] + [
        f"  {p['stage']}: {p['items']} item(s), {p['cause']}{_under(p)}: "
        f"{next_step(p['cause'])}" for p in parked] + [
        "  the daemon's log has each item's exposure and error: its lines \"parked on an "
        "infrastructure fault ...\""]


def _under(parked: dict[str, Any]) -> str:
    """Where a disk fault was writing (its error, ENOSPC, often names no path)."""
    return f" under {parked['root']}" if parked.get("root") else ""
