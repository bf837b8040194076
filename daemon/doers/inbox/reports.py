"""What the inbox watcher hands its caller, and how it names a file in its logs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calstream.steps.naming import BadName, parse_exposure_name

log = logging.getLogger("calstream.watcher")


@dataclass(frozen=True)
class Arrival:
    path: Path
    exposure_id: str
    digest: str  # "sha256:<hex>"
    size: int
    header: dict[str, Any]  # calstream.steps.exposure_keywords.EXPOSURE_KEYWORDS present
    detected_at: float  # epoch seconds when this content was first seen
    source: str  # "watch" | "startup-scan"


@dataclass(frozen=True)
class Rejection:
    path: Path  # where the file was in the inbox
    quarantined_to: Path | None  # None if it could not be moved
    reason: str
    exposure_id: str | None
    digest: str | None
    detected_at: float


@dataclass(frozen=True)
class WatcherStats:
    seen: int  # distinct file contents picked up
    announced: int  # on_arrival calls that succeeded
    duplicates: int  # contents already announced, skipped
    recorded: int  # start-up files whose products exist: ledger only
    rejected: int
    pending: int  # tracked now: settling, incomplete or awaiting a retry
    retrying: int  # arrivals and rejections whose callback failed, awaiting retry
    errors: int  # failed callbacks and unexpected errors, cumulative


@dataclass
class Counts:
    """The cumulative part of WatcherStats, shared by the watcher's parts."""

    seen: int = 0
    announced: int = 0
    duplicates: int = 0
    recorded: int = 0
    rejected: int = 0
    errors: int = 0


def exposure_id_of(path: Path) -> str | None:
    try:
        return parse_exposure_name(path.name).exposure_id
    except BadName:
        return None


def log_fields(exposure_id: str | None, path: Path) -> dict[str, Any]:
    # The fields daemon/operations/logs.py puts on every line.
    return {"exposure_id": exposure_id, "stage": "watcher", "path": str(path)}


def log_file(
    level: int, msg: str, path: Path, arrival: Arrival | None = None, *, exc_info: bool = False
) -> None:
    """One line about one file, named by its exposure id (in the text and as a field).
    Its place is the caller's (``stacklevel``): the log's flood control counts
    lines by where they come from, and a junk flood's "rejected" lines must
    not use up the budget of a broker's "on_reject failed"."""
    eid = arrival.exposure_id if arrival else exposure_id_of(path)
    log.log(level, "%s: %s", eid or path.name, msg, exc_info=exc_info, extra=log_fields(eid, path),
            stacklevel=2)
