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
from pathlib import Path

import anyio

from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.product_store import ProductStore
from calstream.steps.plans import Plan
from calstream.topics import contract

log = logging.getLogger("calstream.planner")


async def own_holds(planner) -> dict[str, dict]:
    """The planner's own last hold record of each exposure: its snapshot's
    (the state restored so far), then its ledger's, newer (each is kept
    before it is sent, by a standby too), each checked as a message would
    be (restore_from_disk warns about the others)."""
    return {**planner.holds, **await anyio.to_thread.run_sync(kept_holds, planner.ledger)}


def kept_holds(ledger: PlannerLedger, *, tidy: bool = True) -> dict[str, dict]:
    """The hold records a planner's ledger keeps, by exposure, each checked
    as a message would be (``tidy``: as PlannerLedger.kept)."""
    own = {}
    for body in ledger.kept("holds", tidy=tidy):
        try:
            contract.validate("hold", body)
        except contract.InvalidMessage:
            continue
        own[body["exposure_id"]] = body
    return own


def planner_holds_at(work_dir: Path) -> dict[str, dict] | None:
    """The planner's own hold records if ``work_dir`` is a planner's (its
    ledger's directory is there: `calstream holds list` with the daemon's
    ``--work-dir``), else None: not known from here."""
    ledger = PlannerLedger(work_dir)
    # Only read: the command may run beside the daemon that writes the
    # ledger (or in another pid namespace, where its writer looks gone).
    return kept_holds(ledger, tidy=False) if ledger.root.is_dir() else None


async def restore_from_disk(planner) -> None:
    """What the broker lost: plans and holds from the ledger (re-published,
    so every reader of those topics sees them again), stage-3 versions
    from the product store."""
    lost: list[tuple[str, str, contract.Message]] = []  # sent together at the end
    for body in await anyio.to_thread.run_sync(planner.ledger.kept, "plans"):
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
    kept_holds = await anyio.to_thread.run_sync(planner.ledger.kept, "holds")
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

    def stage3_products() -> list[tuple[str, dict]]:
        # (the tree it lies in, not what its event claims; its event)
        store = ProductStore(planner.cfg.products,
                             moved_from=planner.cfg.products_moved_from)
        return [(n, r["event"]) for n in ["live", *store.namespaces()]
                for r in store.for_namespace(n).records("stage3")
                if r["event"].get("stage") == "stage3"]

    for namespace, event in await anyio.to_thread.run_sync(stage3_products):
        try:  # a file is untrusted: one the decisions cannot take is left out, not fatal
            contract.validate("product", event)
            planner.state_for(namespace).restore_product(event)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("planner: stage-3 record of %s left out: %s: %s",
                        str(event.get("product_name"))[:200], type(exc).__name__, exc)
