"""Whose run is it: the claim on a work item between daemons (pure).

Two daemons in one consumer group share a product store. When a partition
moves from daemon A, still running an item, to daemon B, B fetches the record
again from the committed offset; without a claim it would start the same run
(hours, for stage 3). A run therefore holds a claim file in the store
(doers/work_claims.py), touched every heartbeat while it lasts and removed
once the product's commit marker is down. This module judges a claim found in
the way: the doer does the file work.

A claim is *live* while its heartbeat is recent; *stale* when its heartbeat
is older than the bound (its daemon died, hung or lost the store), or when it
was left by a process of this host that is gone (a restart after kill -9 need
not wait the bound out). A claim naming this very process (same token) is its
own, left behind by a run that was cut short. A stale claim may be taken over; a live one is waited
for, without holding a worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A work id is a sha256 hex digest (steps/provenance.py): nothing else may
# become a claim's file name.
_WORK_ID = re.compile(r"[0-9a-f]{64}")

FREE, LIVE, STALE, MINE = "free", "live", "stale", "mine"


class BadClaimName(ValueError):
    """A work id or version that cannot name a claim file."""


def claim_name(work_id: str, version: int) -> str:
    """The claim's file name: ``<work id>.v<version>``, checked (the work id
    comes from a message's inputs)."""
    if not isinstance(work_id, str) or not _WORK_ID.fullmatch(work_id):
        raise BadClaimName(f"work id {work_id!r} is not a sha256 hex digest")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BadClaimName(f"version {version!r} is not a positive integer")
    return f"{work_id}.v{version}"


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: a host, a pid and a token drawn at process start (a
    restarted daemon in a container may have the same pid)."""

    host: str
    pid: int
    token: str

    def as_record(self) -> dict:
        return {"host": self.host, "pid": self.pid, "token": self.token}

    @staticmethod
    def from_record(value: object) -> Owner | None:
        """The owner a claim file names, or None (being written, or garbage)."""
        if not isinstance(value, dict):
            return None
        host, pid, token = value.get("host"), value.get("pid"), value.get("token")
        if not (isinstance(host, str) and isinstance(token, str) and isinstance(pid, int)
                and not isinstance(pid, bool)):
            return None
        return Owner(host, pid, token)


def judge(*, exists: bool, heartbeat_age: float, owner: Owner | None, me: Owner,
          stale_seconds: float, owner_alive: bool = True) -> str:
    """What a claim found in the way means: FREE (none), MINE (this process's
    own, left behind), LIVE (wait), or STALE (take it over).

    ``heartbeat_age``: seconds the observer has seen the claim untouched, by
    its own monotonic clock (never the mtime against a wall clock, which
    steps: doers/heartbeat_silence.py); ``owner``:
    what it names (None while it is being written: judged by its age alone);
    ``owner_alive``: whether the owner's pid runs, meaningful only on this host.
    """
    if not exists:
        return FREE
    if owner == me:
        return MINE
    if owner is not None and owner.host == me.host and not owner_alive:
        # A process of this host that is gone (as the store's scratch cleaning
        # judges it): nobody is running it.
        return STALE
    return STALE if heartbeat_age > stale_seconds else LIVE
