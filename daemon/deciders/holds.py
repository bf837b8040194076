"""Holds on provisional pointing (pure): when an exposure is held, how a hold
is released, and the hold records the planner publishes.

An exposure whose pointing is PLANNED (ENGQLPTG) goes no further than
detector1 until a pointing correction, an operator's release or a redelivery
with better pointing releases it. ``holds`` below is the planner's map of
exposure id -> last hold record, shared by every namespace: a hold is on an
exposure's content, wherever it is reprocessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.planner_records import Emit, Seen
from calstream.topics import contract

Holds = dict[str, dict[str, Any]]


def hold_or_release(seen: Seen, holds: Holds) -> list[Emit]:
    """A new detector1 product: hold it (provisional pointing), or release the
    hold of an earlier copy (redelivered with better pointing)."""
    exposure_id = seen.exposure.exposure_id
    current = holds.get(exposure_id)
    if current and current.get("waiting_for"):
        current = None  # a WFSS grism's wait for its direct image is no pointing hold
    digest = seen.event["inputs"][0]["digest"]
    if seen.provisional:
        if current and current["state"] == "held" and current["digest"] == digest:
            return []
        body = dict(exposure_id=exposure_id, program=seen.exposure.name.program,
                    state="held", since=seen.event["emitted_at"], digest=digest,
                    reason="ENGQLPTG=PLANNED: pointing is provisional; nothing past "
                           "detector1 until it is corrected", release=None)
    elif current and current["state"] == "held":
        return [release_record(seen, {
            "path": "redelivery", "at": seen.event["emitted_at"], "by": None,
            "reason": f"redelivered with ENGQLPTG={seen.event.get('pointing_quality')}",
            "digest": digest}, holds)]
    else:
        return []
    return [hold_record(exposure_id, body, digest, holds)]


def hold_to_restore(record: dict[str, Any], own: dict[str, Any] | None) -> dict[str, Any] | None:
    """The hold record a planner takes back for an exposure when it reads
    ``record`` on the ``holds`` topic (at its start, or a standby following
    the active planner): ``own`` is its own last record of the exposure (its
    ledger, its snapshot, what it decided), or None.

    The topic is the planner's, but the broker is shared: anyone who can
    write to it can write a ``released`` record with the held file's digest
    (public in the product event), and a release read back was a release
    made before the restart. So the planner's own record wins, and a record
    it has none of is taken only if it releases nothing: a hold is
    restrictive, and the planner decides it again from the product event
    anyway. A release it did not decide itself comes back only from its
    inputs (the pointing update, read again; a corrected redelivery), never
    from the record. None: nothing to take."""
    if own is not None:
        return own
    if record.get("state") == "released" or record.get("release") \
            or record.get("pointing_release"):
        return None
    return record


def holds_shown(on_topic: Holds, own: Holds | None) -> Holds:
    """What ``calstream holds list`` shows of each exposure: ``own`` is the
    planner's own last record of each (its ledger), or None when it cannot
    be read from where the command runs; ``on_topic`` the holds topic's
    last record of each, which anyone who can write to the broker may have
    written (a forged release, a standby's stale record), and which the
    planner does not take back as its own (``hold_to_restore``).

    Each row is the record believed, with ``source``: "planner" (its own
    record; ``holds_topic``, the topic's last one when that says otherwise)
    or "holds topic" (``checked`` False: nothing to check it against;
    True: the planner has no record of that exposure)."""
    if own is None:
        return {e: {**r, "source": "holds topic", "checked": False}
                for e, r in on_topic.items()}
    shown = {e: {**r, "source": "holds topic", "checked": True}
             for e, r in on_topic.items() if e not in own}
    for exposure, record in own.items():
        row = {**record, "source": "planner"}
        theirs = on_topic.get(exposure)
        if theirs is not None and _content(theirs) != _content(record):
            row["holds_topic"] = theirs
        shown[exposure] = row
    return shown


def _content(record: dict[str, Any]) -> dict[str, Any]:
    # Who sent it is no part of what it says: the planner keeps its record
    # before the publisher adds ``producer``; a standby's copy names itself.
    return {k: v for k, v in record.items() if k != "producer"}


def release_record(seen: Seen, release: dict[str, Any], holds: Holds) -> Emit:
    exposure_id = seen.exposure.exposure_id
    current = holds.get(exposure_id) or {}
    body = {k: v for k, v in current.items()
            if k not in ("schema", "schema_version", "event_id", "emitted_at", "producer")}
    body.update(exposure_id=exposure_id, program=seen.exposure.name.program,
                state="released", release=release)
    body.setdefault("since", seen.event["emitted_at"])
    body.setdefault("digest", seen.digest)
    body.setdefault("reason", "ENGQLPTG=PLANNED")
    return hold_record(exposure_id, body, release["digest"], holds)


def hold_record(exposure_id: str, body: dict[str, Any], digest: str, holds: Holds) -> Emit:
    """The hold message for ``body``; ``holds`` remembers it as the current record."""
    # What is waited for (a direct image) is part of the identity; a pointing
    # hold's id stays what it always was.
    waiting = [body["waiting_for"]] if body.get("waiting_for") else []
    message = contract.build(
        "hold", contract.event_id("hold", exposure_id, body["digest"], body["state"], digest,
                                  (body.get("release") or {}).get("path"), *waiting),
        **body)
    holds[exposure_id] = message.body
    return Emit("holds", exposure_id, message)


def already_applied(update: contract.Message, holds: Holds) -> bool:
    """Whether this pointing update was applied before (read again after a restart)."""
    record = holds.get(update["exposure_id"]) or {}
    # A WFSS grism held for its direct image keeps its pointing release aside.
    applied = record.get("release") or record.get("pointing_release") or {}
    return applied.get("update_event_id") == update.event_id


def update_problem(update: contract.Message, seen: Seen | None) -> str | None:
    """Why a pointing update cannot release ``seen`` (its exposure), or None."""
    exposure_id = update["exposure_id"]
    if seen is None:
        return (f"unknown exposure {exposure_id}: no detector1 product for it yet (the update "
                "is kept, and applied if its product comes: WaitingUpdates)")
    if not seen.provisional:
        return (f"{exposure_id} is not held (ENGQLPTG={seen.event.get('pointing_quality')}"
                f"{', already released' if seen.release else ''})")
    if update.get("digest") and update["digest"] != seen.digest:
        return (f"{exposure_id}: the update is for content {update['digest']}, "
                f"the held file is {seen.digest}")
    return None


def release_without_product(update: contract.Message, holds: Holds) -> Emit | None:
    """An operator's release (``calstream holds release``) of a pointing hold
    the planner keeps for an exposure it has no product event of: the hold
    record, released (path ``operator``); None when it is no such release.

    Such a record came from the holds topic at a restart (a forged one,
    taken as restrictive: hold_to_restore) or outlived its exposure's
    product events (gone with a broker or its retention). Nothing else
    releases it, and it kept the oldest hold's age (``CalstreamHoldTooOld``)
    rising for good: the update was dead-lettered "unknown exposure". A
    correction is not enough here: it is applied to the files, which the
    planner knows only from the product event. If the product comes after
    all, it takes this release, as one made before a restart
    (PlannerState.observe)."""
    current = holds.get(update["exposure_id"])
    if update["action"] != "release" or not current or current.get("state") != "held" \
            or current.get("waiting_for"):
        return None
    if update.get("digest") and update["digest"] != current.get("digest"):
        return None
    body = {k: v for k, v in current.items()
            if k not in ("schema", "schema_version", "event_id", "emitted_at", "producer")}
    body.update(state="released", release={
        "path": "operator", "at": update["emitted_at"], "by": update.get("by"),
        "reason": update["reason"], "digest": current["digest"],
        "update_event_id": update.event_id})
    return hold_record(update["exposure_id"], body, current["digest"], holds)


class WaitingUpdates:
    """Pointing updates that came before their exposure's detector1 product.

    The planner reads several topics, and a rebuild reads the pointing
    updates after every product event (planner_loop defers them): it
    applied an update whose product came later, while the live planner
    dead-lettered it ("unknown exposure") and the exposure stayed held for
    good -- until the next rebuild released it. So both keep such an update
    here (its dead letter still says so at once), and apply it when the
    product comes. Bounded: the oldest is forgotten past ``capacity`` (its
    dead letter stands). Kept in the planner's snapshot with its state."""

    CAPACITY = 10_000

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._by_exposure: dict[str, list[contract.Message]] = {}
        self._count = 0
        self.forgotten = 0  # pushed out by the bound

    def __len__(self) -> int:
        return self._count

    def keep(self, update: contract.Message) -> None:
        waiting = self._by_exposure.setdefault(update["exposure_id"], [])
        if any(u.event_id == update.event_id for u in waiting):
            return  # read again (a restart's tail): kept once
        waiting.append(update)
        self._count += 1
        while self._count > self.capacity:
            oldest = next(iter(self._by_exposure))  # dicts keep their insertion order
            self._by_exposure[oldest].pop(0)
            if not self._by_exposure[oldest]:
                del self._by_exposure[oldest]
            self._count -= 1
            self.forgotten += 1

    def take(self, exposure_id: str) -> list[contract.Message]:
        """The updates that waited for ``exposure_id``, in the order they came."""
        waiting = self._by_exposure.pop(exposure_id, [])
        self._count -= len(waiting)
        return waiting

    def exposures(self) -> list[str]:
        return list(self._by_exposure)

    def to_body(self) -> list[dict[str, Any]]:
        return [u.body for waiting in self._by_exposure.values() for u in waiting]

    @classmethod
    def from_body(cls, body: Any, capacity: int = CAPACITY) -> WaitingUpdates:
        """From a snapshot's list: untrusted, each entry kept only if it is a
        pointing update the planner would have read."""
        waiting = cls(capacity)
        for entry in body if isinstance(body, list) else ():
            if isinstance(entry, dict) and contract.is_valid("pointing_update", entry):
                waiting.keep(contract.Message("pointing_update", entry))
        return waiting


def release_by_update(update: contract.Message, seen: Seen) -> dict[str, Any]:
    """The release a valid pointing update makes: a correction or an operator's word."""
    if update["action"] == "correct":
        return {"path": "pointing", "at": update["emitted_at"], "by": update.get("by"),
                "reason": update.get("reason") or
                f"corrected pointing ({update['keywords']['ENGQLPTG']}) from "
                f"{update.get('source') or 'the pointing topic'}",
                "digest": seen.digest, "update_event_id": update.event_id,
                "keywords": dict(update["keywords"])}
    return {"path": "operator", "at": update["emitted_at"], "by": update.get("by"),
            "reason": update["reason"], "digest": seen.digest,
            "update_event_id": update.event_id}


def rejection_id(update: contract.Message) -> str:
    """The event id of an update's dead letter: one per update, whatever the reason."""
    return contract.event_id("dead_letter", "planner", update.event_id)


def reject_update(update: contract.Message, reason: str) -> Emit:
    message = contract.build(
        "dead_letter", rejection_id(update),
        category="rejected_update", reason=f"pointing update rejected: {reason}",
        stage="planner", attempts=0, exposure_id=update["exposure_id"],
        original={"topic": "pointing", "key": update["exposure_id"],
                  "value": json.dumps(update.body), "value_encoding": "utf-8"})
    return Emit("deadletter", update["exposure_id"], message)


def release_notes(members: list[Seen], paths: dict) -> tuple[dict, str | None]:
    """What the released members' holds add to an order: the pointing
    corrections of its files, and the operators' reasons."""
    corrections = {Path(p).name: {
        "keywords": m.release["keywords"],
        "note": f"calstream: pointing corrected by update {m.release['update_event_id']}"}
        for m in members if m.release["path"] == "pointing"
        for p in m.outputs if p in paths}
    operator = [m for m in members if m.release["path"] == "operator"]
    annotation = ("calstream: ENGQLPTG=PLANNED hold released by operator: " + "; ".join(
        f"{m.exposure.exposure_id}: {m.release['reason']} ({m.release.get('by') or '?'})"
        for m in operator)) if operator else None
    return corrections, annotation
