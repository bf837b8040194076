"""How the planner gets its state back at start: a snapshot and the tail, or
every record from the beginning.

With a usable snapshot (doers/planner_snapshots.py) the decision state is
the snapshot's, and only what came after the offsets it covers is read:
work orders, holds and plans here, product events, pointing updates, plans
and dead letters in the planner's loop. Without one (missing, old, corrupt,
another version) everything is read from the beginning. Either way the
planner is not ready (``caught_up`` False, /readyz,
``calstream_planner_catching_up``) until it has read up to "now".

A partition whose high watermark is below the snapshot's offset, or that
holds another record where the snapshot read its last (snapshot_places.py),
was lost or refilled by the broker: it is read from its beginning, the
snapshot's decisions kept (docs/design.md: an order, hold or version the
snapshot knows is recognised when its record comes again).
"""

from __future__ import annotations

import gc
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio

from calstream.daemon.deciders import planner_snapshot
from calstream.daemon.deciders.holds import WaitingUpdates, hold_to_restore
from calstream.daemon.deciders.snapshot_columns import collector_paused
from calstream.daemon.deciders.snapshot_reuse import BlockCache, BlockWriter
from calstream.daemon.deciders.stage2_failures import RefusedOrders
from calstream.daemon.deciders.standby_withheld import WithheldDecisions, usable_without_following
from calstream.daemon.doers import (
    planner_clients,
    planner_disk_records,
    planner_snapshots,
    planner_tail,
    snapshot_places,
)
from calstream.daemon.doers.file_reads import ReadHung
from calstream.daemon.doers.planner_compaction import compact_when_due, over_budget
from calstream.daemon.doers.start_waits import hung_or_disk_cause
from calstream.steps.plans import Plan, PlanError
from calstream.topics import contract

if TYPE_CHECKING:
    from calstream.daemon.doers.planner_loop import Planner

log = logging.getLogger("calstream.planner")

SNAPSHOT_EVERY_RECORDS = 50_000  # product/pointing/plan records between snapshots
SNAPSHOT_EVERY_SECONDS = 300.0  # ... or this long, whichever comes first, once caught up


def load_snapshot(planner: Planner, found: planner_snapshots.Found | None = None) -> bool:
    """The state from the snapshot (``found``: its file as read), if one can
    be trusted; True if it was used."""
    # The collector stays off from reading to freezing: turned on in between,
    # its first collections would walk every object just read (a second and
    # more for a million events), though none of them is garbage.
    with collector_paused():
        found = found or planner_snapshots.read_file(planner.cfg.work_dir)
        snap = found and planner_snapshots.parse(found, topic_prefix=planner.topics.prefix)
        if snap is None:
            return False
        if (withheld := _withheld_of(planner, snap.body)) is None:
            return False
        reuse = BlockCache()  # the file's blocks, for the next snapshot to write as they are
        try:
            states, holds, plans, event_ids = planner_snapshot.restore(
                snap.body, companion_wait=planner.cfg.companion_wait,
                level3_settle=planner.cfg.stage3_settle,
                level3_quiet_period=planner.cfg.stage3_quiet_period,
                level3_stage2_wait=planner.cfg.stage3_stage2_wait,
                step_parameters=planner.cfg.step_parameters(), reuse=reuse)
        except planner_snapshot.SnapshotInvalid as exc:
            log.warning("planner: snapshot ignored, %s: rebuilding from the topics", exc)
            return False
        # Millions of long-lived objects: out of the collector's sight, or each
        # of its next full collections would walk every one of them again. A
        # frozen object is still freed by reference counting when the planner
        # drops it; only reference cycles (a few per level-3 candidate) would stay.
        gc.freeze()
    planner.holds.clear()
    planner.holds.update(holds)
    for state in states.values():
        state.holds = planner.holds  # one map of holds, shared by every namespace
    planner.states = states
    planner.state = planner.state_for("live")
    planner.plans = plans
    planner.event_ids = event_ids
    # Older snapshots have none: nothing waited then (a waiting update was dead-lettered).
    planner.pointing_waiting = WaitingUpdates.from_body(snap.body.get("pointing_waiting"))
    # The letters of refused orders read before its offsets (none before session 46).
    planner.failed_orders = RefusedOrders.from_body(snap.body.get("refused_orders"))
    planner.positions = dict(snap.offsets)
    planner.snapshot_covered = snap.covered  # checked against the broker: snapshot_places
    planner.snapshot_reuse = reuse
    planner.snapshot_files.restored(found)  # the file to delete if the state fails late
    if _following(planner):  # what it withheld goes with the state that counts it ordered
        planner.standby.memory = withheld
    planner.restored_from = {"snapshot": str(planner_snapshots.snapshot_path(
        planner.cfg.work_dir)), "taken_at": snap.taken_at, "bytes": snap.size}
    log.info("planner: state restored from the snapshot of %s (%d namespace(s), %.0f MB); "
             "reading the records after it", time.strftime(
                 "%Y-%m-%d %H:%M:%S", time.gmtime(snap.taken_at)), len(states), snap.size / 1e6)
    return True


async def load_snapshot_timed(planner: Planner) -> bool:
    """``load_snapshot``, its file read timed (doers/snapshot_files.py): on a
    silent work directory the start froze unseen, and a stop waited for it;
    now the full rebuild, no snapshot written until the directory answers."""
    try:
        found = await planner.snapshot_files.read()
    except ReadHung as exc:
        log.warning("planner: snapshot unread, %s: rebuilding from the topics", exc)
        planner.snapshot_parking.failed(exc.cause, exc)
        return False
    return found is not None and await anyio.to_thread.run_sync(load_snapshot, planner, found)


def _following(planner: Planner) -> bool:
    return planner.standby is not None and planner.standby.follow


def _withheld_of(planner: Planner, body: Any) -> WithheldDecisions | None:
    """What a standby's snapshot withheld (empty: an active's); None (warned): unusable."""
    part = body.get("standby") if isinstance(body, dict) else None
    if not _following(planner):
        if usable_without_following(part):
            return WithheldDecisions()
        log.warning("planner: snapshot ignored, written by a standby with decisions withheld, "
                    "and this planner follows no other (planner_lease = false): it could not "
                    "tell which of them were sent; rebuilding from the topics")
        return None
    try:
        return WithheldDecisions.from_body(part, planner.standby.memory.capacity)
    except ValueError as exc:
        log.warning("planner: snapshot ignored, %s: rebuilding from the topics", exc)
        return None


def _seen_published(planner: Planner, message: contract.Message) -> None:
    """An order or hold after a snapshot's offsets: what following it would
    have done (withheld no more, known as published). Not in a rebuild:
    nothing is withheld yet, and the state knows every order and hold read."""
    if _following(planner) and planner.restored_from is not None:
        planner.standby.memory.seen_published(message.event_id)


# Python's collector looks at its young objects every 700 new containers. The
# planner keeps about twenty new containers per product event (its parsed
# body, the records made of it) for as long as the exposure matters, so at
# the default the collector walks them again and again: 10-15 % of a fresh
# event's CPU (bench/README.md). Every 50,000 is still a few times a second
# at full rate; a reference cycle waits that long to be freed (a few MB).
YOUNG_COLLECTION_EVERY = 50_000


def tune_collector() -> None:
    """Fewer young collections in the planner's process (idempotent)."""
    young, middle, old = gc.get_threshold()
    if young:  # 0: the collector was turned off on purpose; left so
        gc.set_threshold(max(young, YOUNG_COLLECTION_EVERY), middle, old)


async def restore(planner: Planner) -> None:
    # A send the broker does not acknowledge is named in /readyz meanwhile.
    with planner_clients.restore_sends_waited(planner):
        await _restore(planner)


async def _restore(planner: Planner) -> None:
    tune_collector()
    used = await load_snapshot_timed(planner)
    if used:
        await snapshot_places.read_again_where_moved(planner, planner.snapshot_covered)
    if not used and _following(planner):  # a rebuild withholds again what nobody sent
        planner.standby.memory = WithheldDecisions(planner.standby.memory.capacity)
    # What the topics hold decides what the ledger must re-publish, not what
    # the state knows: a snapshot knows plans and holds the broker may have lost.
    from_snapshot = {"plans": set(planner.plans), "holds": set(planner.holds)}
    seen: dict[str, set[str]] = {"plans": set(), "holds": set()}
    # One reader for them all, each topic read (and applied) in turn: work
    # orders, then holds, then plans, as the hold and plan logic needs.
    async with planner_clients.tail_reads(planner, [planner.topics.name(t) for t in (
            *planner._work_topics(), "holds", "plans")]) as reads:
        await _restore_records(planner, reads, seen)
    planner.on_broker = {kind: seen[kind] | (from_snapshot[kind] if planner.tail_only.get(kind)
                                             else set()) for kind in seen}
    # Its sends (re-published plans and holds, the dead letters above) wait out
    # a broker that does not answer, parked: GatedPublisher.publish says how,
    # and why one sent twice is taken once.
    await planner._restore_from_disk()
    # A plan new to the state (the tail's, the ledger's) may complete candidates
    # of the restored exposures: what loading it decides goes out once caught up
    # (catch_up_orders.py). Dropped before: its mosaics were never ordered.
    decided = [e for plan in planner.plans.values() for state in planner.states.values()
               for e in state.load_plan(plan, planner.clock.now())]
    await planner._publish_unrecorded(planner.held_orders.hold(decided))
    log.info("planner restored %d work order(s), %d hold record(s) and %d plan(s)%s",
             sum(len(s.ordered) + s.stage3.restored_order_count()
                 for s in planner.states.values()),
             len(planner.holds), len(planner.plans), " (snapshot + tail)" if used else "")


async def _restore_records(planner: Planner, reads: planner_clients.TailReads,
                           seen: dict[str, set[str]]) -> None:
    """The records after the state's positions, applied a topic at a time."""
    for topic in planner._work_topics():
        for record in await planner_tail.read_topic(planner, reads, topic):
            try:
                order = contract.decode(record.value, expected="work_order")
            except contract.InvalidMessage:
                continue  # the stage consumers dead-letter these
            planner.state_for(order.get("namespace") or "live").restore_order(order)
            _seen_published(planner, order)
    # A hold record on the topic is taken only as holds.hold_to_restore says:
    # the planner's own record (its snapshot's, its ledger's) wins over it.
    own = await planner_disk_records.own_holds(planner)
    for record in await planner_tail.read_topic(planner, reads, "holds"):
        if record.value is None:
            continue
        try:
            hold = contract.decode(record.value, expected="hold")
            taken = hold_to_restore(hold.body, own.get(hold["exposure_id"]))
            if taken is not None:
                planner.state.restore_hold(contract.Message("hold", taken))
            _seen_published(planner, hold)
            seen["holds"].add(hold["exposure_id"])
        except contract.InvalidMessage as exc:
            # The planner's own compacted topic, but a broker is shared: a
            # hold it cannot read is reported (the same dead letter, same
            # event id, at every start) and never trusted.
            await planner._reject(record, "invalid_message", f"hold record: {exc}")
    for record in await planner_tail.read_topic(planner, reads, "plans"):
        try:
            message = contract.decode(record.value, expected="plan")
            plan = Plan.from_json(message.body)
        except contract.InvalidMessage:
            continue  # `calstream plan load` validates before it sends
        except PlanError as exc:
            # Refused when it came (planner_decisions._plan_emits), and still on the
            # topic: reported again (the same dead letter) and never used, not
            # raised out of every start.
            await planner._reject(record, "bad_input", str(exc))
            continue
        planner.plans.setdefault(message["plan_id"], plan)
        seen["plans"].add(message["plan_id"])
        await planner.keep("plans", message.body)


async def take_snapshot(planner: Planner) -> int:
    """Write the snapshot of the state and the offsets it covers; its size.

    On the loop, between two records, only copies of what the loop may
    change (the maps, not their records: deciders/planner_snapshot.py). In
    a thread: encoding the blocks whose rows changed since the last
    snapshot (or since the restore), the others written as stored then
    (deciders/snapshot_reuse.py) and compressing; writing in a timed one
    (doers/snapshot_files.py)."""
    if (hung := planner.snapshot_files.still_hung()) is not None:  # nothing copied for it
        planner.snapshot_parking.failed(hung.cause, hung)
        return 0
    started = time.perf_counter(), time.process_time()
    with collector_paused():  # many new containers, none of them garbage
        captured = planner_snapshot.capture(planner.states, holds=planner.holds,
                                            plans=planner.plans, event_ids=planner.event_ids)
    # A standby's withheld decisions, with the state that counts them ordered
    # (deciders/standby_withheld.py); taken at the same moment as the state.
    withheld = planner.standby.memory.to_body() if _following(planner) else None
    waiting = planner.pointing_waiting.to_body()  # the updates before their exposure
    refused = planner.failed_orders.to_body()  # refused orders whose letters were read
    offsets = dict(planner.positions)
    covered = await snapshot_places.covered_now(planner, offsets)
    taken = planner.records_seen
    before, planner.last_snapshot = planner.last_snapshot, (time.monotonic(), taken)
    on_loop = time.perf_counter() - started[0]
    writer = BlockWriter(planner.snapshot_reuse)

    def encode() -> tuple[planner_snapshots.Packed, list, float]:
        cpu, stored = time.thread_time(), []
        # A tuple or two per exposure, none of them garbage: with the collector
        # on, its full collections walk the whole state (two thirds of the
        # time at 100k events). The loop's garbage waits these few seconds.
        with collector_paused():
            body = planner_snapshot.encode(captured, writer)
            if withheld is not None:
                body["standby"] = withheld
            if waiting:
                body["pointing_waiting"] = waiting
            if refused:
                body["refused_orders"] = refused
            packed = planner_snapshots.pack(body, offsets=offsets, stored=stored,
                                            topic_prefix=planner.topics.prefix, covered=covered)
        return packed, stored, time.thread_time() - cpu

    try:
        packed, stored, cpu = await anyio.to_thread.run_sync(encode)
        size = await planner.snapshot_files.put(packed)  # timed: work_dir_hung
    except (OSError, ReadHung) as exc:
        # A full, read-only or silent disk: the planner goes on without a new
        # snapshot (a start reads a longer tail), parked until one is written.
        if (cause := hung_or_disk_cause(exc)) is None:
            raise
        planner.snapshot_parking.failed(cause, exc)
        planner.last_snapshot = before  # not taken: still due
        return 0
    planner.snapshot_reuse = writer.written(stored)
    planner.snapshot_written = taken  # last_snapshot says when one began
    planner.snapshot_parking.resumed()
    log.info("planner: snapshot written (%.0f MB, %d of %d blocks reused; %.2f s on the loop, "
             "%.1f s in all, %.1f CPU s in the writer)", size / 1e6, writer.reused,
             len(writer.blocks), on_loop, time.perf_counter() - started[0], cpu)
    return size


def snapshot_due(planner: Planner) -> bool:
    """Every so many records or seconds, and at once after a rebuild (one
    that took long is not done again). Not at once after a snapshot's
    restore: its tail was short (a long one, SNAPSHOT_EVERY_RECORDS or
    more, is written at once). Writing one costs little then -- the blocks
    nobody read are written as the file stores them -- but it would only
    save the next start a tail it reads in a fraction of a second. And at
    once when the planner is over its memory budget: the compaction that
    follows (compact_when_due) should not wait for the next one, while the
    planner grows by up to ~9 kB a record."""
    at, records = planner.last_snapshot
    new = planner.records_seen - records
    if planner.standby is not None and not planner.standby.may_snapshot():
        return False  # taking over: no compaction may delay it
    if planner.snapshot_parking.failures:  # the last one failed: again when its delay is up
        return new > 0 and time.monotonic() >= planner.snapshot_parking.retry_at
    first = records == 0 and planner.caught_up and planner.restored_from is None
    return new > 0 and (first or new >= SNAPSHOT_EVERY_RECORDS
                        or time.monotonic() - at >= SNAPSHOT_EVERY_SECONDS
                        or over_budget(planner))


async def snapshot_when_due(planner: Planner) -> None:
    """Once caught up, the periodic snapshot (or the one a memory over budget
    asks for), then Compaction if still over budget. The active planner and
    a standby alike: a standby's snapshot carries what it withheld."""
    if planner.caught_up and snapshot_due(planner) and await take_snapshot(planner):
        compact_when_due(planner)  # not after a snapshot parked on a disk fault
