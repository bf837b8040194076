"""What a starting planner takes back from disk when the broker lost it.

The plans and holds the planner decided are kept in its ledger
(doers/planner_ledger.py) besides their topics; the stage-3 products'
versions lie in the product store. A broker that lost its topics (the
embedded broker keeps them in memory) would otherwise make the planner
forget plans and holds and number stage-3 products again from 1. Each file
is untrusted: checked as a message would be, left out with a warning if it
cannot be used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from calstream.daemon.doers import kafka
from calstream.daemon.doers.file_reads import READ_SECONDS, STORE_HUNG, FileReads
from calstream.daemon.doers.kafka.publisher import broker_fault
from calstream.daemon.doers.parking import Parking, until_done
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.start_waits import hung_or_disk_cause
from calstream.steps.plans import Plan
from calstream.topics import contract

log = logging.getLogger("calstream.planner")
T = TypeVar("T")

# After a failed look at the topics (the broker lost again), the next one.
REPAIR_RETRY_SECONDS = 5.0


async def own_holds(planner) -> dict[str, dict]:
    """The planner's own last hold record of each exposure: its snapshot's
    (the state restored so far), then its ledger's, newer (each is kept
    before it is sent, by a standby too), each checked as a message would
    be (restore_from_disk warns about the others)."""
    return {**planner.holds, **await ledger_read(planner, kept_holds, planner.ledger)}


async def ledger_read(planner, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args, answered=...)``, a read of the planner's ledger, timed
    from its last answer (PlannerLedger.read): a work directory that does
    not answer parks the planner (work_dir_hung) until it does; before, its
    restore or repair waited unseen for ever. (Timed as a whole, a ledger
    of thousands of files on slow storage that works parked it for ever.)"""
    return await until_done(partial(planner.ledger.read, fn, *args),
                            Parking(planner.cfg, planner.metrics, stage="planner",
                                    what="planner: reading its ledger",
                                    root=planner.ledger.root), hung_or_disk_cause)


def kept_holds(ledger: PlannerLedger, *, tidy: bool = True,
               answered: Callable[[], None] = lambda: None) -> dict[str, dict]:
    """The hold records a planner's ledger keeps, by exposure, each checked
    as a message would be (``tidy``, ``answered``: as PlannerLedger.kept)."""
    own = {}
    for body in ledger.kept("holds", tidy=tidy, answered=answered):
        try:
            contract.validate("hold", body)
        except contract.InvalidMessage:
            continue
        own[body["exposure_id"]] = body
    return own


def planner_holds_at(work_dir: Path, answered: Callable[[], None] = lambda: None
                     ) -> dict[str, dict] | None:
    """The planner's own hold records if ``work_dir`` is a planner's (its
    ledger's directory is there: `calstream holds list` with the daemon's
    ``--work-dir``), else None: not known from here."""
    ledger = PlannerLedger(work_dir)
    # Only read: the command may run beside the daemon that writes the
    # ledger (or in another pid namespace, where its writer looks gone).
    return kept_holds(ledger, tidy=False, answered=answered) if ledger.root.is_dir() else None


async def restore_from_disk(planner) -> None:
    """What the broker lost: plans and holds from the ledger (re-published,
    so every reader of those topics sees them again), stage-3 versions
    from the product store."""
    lost: list[tuple[str, str, contract.Message]] = []  # sent together at the end
    for body in await ledger_read(planner, planner.ledger.kept, "plans"):
        if body.get("plan_id") in planner.on_broker["plans"]:
            continue
        try:  # a file on disk is untrusted too: checked as a message would be
            contract.validate("plan", body)
            plan = Plan.from_json(body)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("planner: kept plan %s cannot be used: %s", body.get("plan_id"), exc)
            continue
        planner.plans[plan.plan_id] = plan
        lost.append(("plans", (body.get("programs") or [""])[0], contract.Message("plan", body)))
    kept_holds = await ledger_read(planner, planner.ledger.kept, "holds")
    for body in kept_holds:
        if body.get("exposure_id") in planner.on_broker["holds"]:
            continue
        try:
            contract.validate("hold", body)
        except contract.InvalidMessage as exc:
            log.warning("planner: kept hold %s cannot be used: %s", body.get("exposure_id"),
                        exc)
            continue
        message = contract.Message("hold", body)
        planner.state.restore_hold(message)
        lost.append(("holds", body["exposure_id"], message))
    # One round trip for all, not one each (GatedPublisher.publish_all): a
    # start on the embedded broker, empty, re-publishes every kept hold.
    if lost:
        await planner.publisher.publish_all(lost)
    # Holds the topic had and the ledger has not, or not in this state (e.g.
    # written before the ledger existed): kept now. Not every hold again: a
    # released hold stays a hold record, so that was a durable write of every
    # hold ever made, at every start, before the planner was ready.
    on_disk = {body.get("exposure_id"): body for body in kept_holds}
    for body in list(planner.holds.values()):
        if on_disk.get(body.get("exposure_id")) != body:
            await planner.keep("holds", body)
    if lost:
        log.warning("the broker had lost %d plan(s) and %d hold record(s): re-published "
                    "from %s", sum(t == "plans" for t, _, _ in lost),
                    sum(t == "holds" for t, _, _ in lost), planner.ledger.root)

    for namespace, event in await stage3_products(planner):
        try:  # a file is untrusted: one the decisions cannot take is left out, not fatal
            contract.validate("product", event)
            planner.state_for(namespace).restore_product(event)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("planner: stage-3 record of %s left out: %s: %s",
                        str(event.get("product_name"))[:200], type(exc).__name__, exc)


# The product store's answer for each record at the restore, at most this long.
STORE_SECONDS = READ_SECONDS


async def stage3_products(planner) -> list[tuple[str, dict]]:
    """Each stage-3 record of the product store, (the tree it lies in, not
    what its event claims; its event), read timed (FileReads.listing: hung
    once no record has answered for STORE_SECONDS). They decide the next
    versions, so there is no restore without them: a store that does not
    answer parks the planner (store_hung) until it does; before, its start
    waited unseen for ever, and a stop waited for it."""
    reads = FileReads(1, STORE_SECONDS, of="the product store")  # across tries: a read left hung is not made again

    def read(answered: Callable[[], None]) -> list[tuple[str, dict]]:
        store = ProductStore(planner.cfg.products, moved_from=planner.cfg.products_moved_from)
        return [(n, r["event"]) for n in ["live", *store.namespaces()]
                for r in store.for_namespace(n).records("stage3", answered=answered)
                if r["event"].get("stage") == "stage3"]

    return await until_done(
        partial(reads.listing, read, Path(planner.cfg.products), what="stage-3 records' read",
                cause=STORE_HUNG),
        Parking(planner.cfg, planner.metrics, stage="planner",
                what="planner: reading the product store's stage-3 records",
                root=planner.cfg.products), hung_or_disk_cause)


def kept_messages(ledger: PlannerLedger, answered: Callable[[], None] = lambda: None
                  ) -> list[tuple[str, str, contract.Message]]:
    """The plans and holds the ledger keeps, as the messages that put them
    back on their topics, each checked as a message would be (a file is
    untrusted: one that is not is left out). ``answered``: ``kept``'s."""
    kept = []
    for topic, kind in (("plans", "plan"), ("holds", "hold")):
        for body in ledger.kept(topic, answered=answered):
            if not contract.is_valid(kind, body):
                continue
            key = body["exposure_id"] if kind == "hold" else (body["programs"] or [""])[0]
            kept.append((topic, key, contract.Message(kind, body)))
    return kept


async def republish_when_owed(planner) -> None:
    """After the broker lost its records (``PublishGate.records_lost``, noted
    by the daemon's loop at an embedded broker's restart or an external
    one's return), the plans and holds of the ledger that the topics lack,
    sent by the planner that acts: the one active at the loss, or the one
    whose pause ended, or that took the lease over after it (the daemon
    re-published only if its planner was active at that moment; one paused
    or taking over sent nothing, and nobody did later). The topics are read
    first: what is there (sent since, or by the planner that acted before)
    is not sent again, so each plan and hold is there once."""
    gate = planner.standby.gate if planner.standby is not None else None
    if gate is None or (losses := gate.repair_due()) is None:
        return
    if time.monotonic() < planner.repair_retry_at:
        return
    try:
        on_topic = {kind: await kafka.read_to_end(planner.cfg, planner.topics.name(kind))
                    for kind in ("plans", "holds")}
    except Exception as exc:  # noqa: BLE001 - the broker's fault: looked at again later
        if broker_fault(exc) is None:
            raise
        planner.repair_retry_at = time.monotonic() + REPAIR_RETRY_SECONDS
        log.info("planner: the plans and holds topics could not be read to put back what the "
                 "broker lost (%s): again in %.0f s", exc, REPAIR_RETRY_SECONDS)
        return
    there = {"plans": _ids(on_topic["plans"], "plan", "plan_id"),
             "holds": _ids(on_topic["holds"], "hold", "exposure_id")}
    ids = {"plans": "plan_id", "holds": "exposure_id"}
    lost = [(topic, key, m) for topic, key, m in
            await ledger_read(planner, kept_messages, planner.ledger)
            if m[ids[topic]] not in there[topic]]
    if not gate.acting:
        return  # the lease moved while reading: the planner acting next does it
    if lost:
        await planner.publisher.publish_all(lost)
        log.warning("the broker had lost %d plan(s) and %d hold record(s): re-published "
                    "from %s", sum(t == "plans" for t, _, _ in lost),
                    sum(t == "holds" for t, _, _ in lost), planner.ledger.root)
    gate.repaired(losses)


def _ids(records, kind: str, field: str) -> set[str]:
    found = set()
    for record in records:
        try:
            found.add(contract.decode(record.value, expected=kind)[field])
        except contract.InvalidMessage:
            continue  # not a record the planner's readers take: no stand-in for its own
    return found
