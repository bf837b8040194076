"""What the planner sends: each message kept (holds), published, counted, logged.

The deciders build their orders unchecked (tests/unit/test_planner_outputs.py
checks every kind they make) and the publisher's encoding checks each
message's schema and size as it goes. A message the encoding refuses is one
message: the messages after it are still sent. Before, the first refusal
ended the batch: the orders after it were never published while the state
took them as sent, and a refusal on a tick (which has no record to blame)
ended the planner's task. Broker faults are not caught here: the publisher
retries them.

A work order refused, by the encoding or by the broker for what it is
(RecordRefused, an InvalidMessage; its answer awaited here or in
``settle``), is one mechanism (``refused_order``): a dead letter of its own
with the order as original, and, for a stage-2 order, its failure handed
back to the planner to count at once (``failed``). Any other message the
encoding refuses is returned with its reason, for a dead letter of the
record it came from.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from calstream.daemon import stages
from calstream.daemon.deciders.planner_records import Emit
from calstream.daemon.deciders.stage2_failures import REASON_SHOWN, RefusedOrders, Stage2Failure
from calstream.daemon.doers.kafka.publisher import RecordRefused, broker_fault
from calstream.daemon.doers.parking import Parking, until_done
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.start_waits import hung_or_disk_cause
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.failures import error_text
from calstream.topics import contract
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import order_identity

log = logging.getLogger("calstream.planner")


@dataclass(frozen=True)
class Refused:
    emit: Emit
    reason: str


def topic_for(topics: Topics, e: Emit) -> str:
    """Replayed work goes to its stage's replay topic (read at low priority)."""
    st = stages.by_live_topic(e.topic)
    if st is not None and e.message.get("priority") == "replay":
        if any(s.logical == st.replay_topic for s in topics.specs):
            return st.replay_topic
    return e.topic


async def keep(ledger: PlannerLedger, topic: str, body: dict[str, Any], *, cfg: Any,
               metrics: Metrics) -> None:
    """``body`` kept in the ledger; while the planner's disk refuses it (full,
    read-only) or does not answer (work_dir_hung: PlannerLedger.timed) the
    planner waits here, parked (doers/parking.py): the record that made it
    is neither dead-lettered nor skipped, and the planner's task goes on
    once the disk takes it."""
    what = f"planner: keeping {topic} record {str(body.get('plan_id') or body.get('exposure_id'))}"
    try:
        await until_done(partial(ledger.timed, ledger.keep, topic, body),
                         Parking(cfg, metrics, stage="planner", what=what, root=ledger.root),
                         hung_or_disk_cause)
    except ValueError as exc:  # a key no file may be named after: the record stands, unkept
        log.warning("planner: %s record not kept: %s", topic, exc)


class Unacknowledged:
    """Work orders sent without waiting for the broker's acknowledgement, and
    the read positions that must wait for them.

    Awaiting each order's acknowledgement before the next record cost a
    round trip to the broker per order (0.36-0.44 ms on the embedded broker,
    five times the CPU of an event's intake and decision, bench/README.md,
    session 29), and aiokafka's CPU for a message sent alone is four times
    that of one sent among others. So the planner loop sends a fetch's work
    orders as it decides them and waits for all of them at the end of the
    fetch (``settle``), before its positions move past the records they came
    from: a snapshot, which records those positions, never covers an order
    the broker has not acknowledged. Holds, dead letters and plans are
    still sent one at a time: a hold's last record is its state, so their
    order must survive a failed send.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[Emit, str, asyncio.Future]] = []
        self.positions: dict[tuple[str, int], int] = {}

    def __bool__(self) -> bool:
        return bool(self.sent)


async def settle(unacked: Unacknowledged, *, publisher, metrics: Metrics,
                 failed: RefusedOrders | None = None) -> dict[tuple[str, int], int]:
    """Wait for every order sent unacknowledged; one the broker did not take
    (lost, not answering) is published again, parked until it is. Returns
    the positions that may now move, and forgets them. ``failed``: as
    ``refused_order``'s."""
    for e, topic, answered in unacked.sent:
        try:
            await answered
        except contract.InvalidMessage as exc:
            # The broker refused the order for what it is (RecordRefused): sent
            # again it is refused again. Raised, it ended the planner's task,
            # and the restart decided and sent it again.
            await refused_order(publisher, e, topic, exc, failed)
            continue
        except Exception as exc:  # noqa: BLE001 - a broker's fault is sent again, the rest raised
            if broker_fault(exc) is None:
                raise
            log.warning("planner: %s for %r not acknowledged (%s): sent again", e.message.type,
                        e.key[:200], exc)
            try:
                if await publisher.publish(topic, e.key, e.message) is False:
                    continue  # withheld: the lease moved meanwhile
            except RecordRefused as refused:  # refused when sent again: as above
                await refused_order(publisher, e, topic, refused, failed)
                continue
        _count_and_log(e, metrics)
    positions, unacked.sent, unacked.positions = unacked.positions, [], {}
    return positions


async def refused_order(publisher, e: Emit, topic: str, exc: Exception,
                        failed: RefusedOrders | None = None) -> None:
    """A work order the encoding or the broker refused for what it is: a
    dead letter of its own, with the order as its original (never placed on
    ``topic``). A stage-2 order's failure is added to ``failed.pending``,
    for the planner to count at once (Planner.count_failed_orders), as a
    stage's letter of it counts: its stage-3 candidates stop waiting for it.
    Keyed by the letter's event id, as its reading back keys it
    (deciders/stage2_failures.py): counted once. Before, the planner's
    state took the order as in flight and its candidates waited
    stage3_stage2_wait (6 h) for a product that could not come, then closed
    naming it as late: until session 44 for any refused order; until
    session 45 for one the encoding refused (lettered as the product event's
    fault, and a letter the reading back cannot decode as an order), or one
    whose letter the dead-letter topic refused too (never read back).

    A stage-2 order whose refusal's letter was read back already (a rebuild,
    a takeover: RefusedOrders) is not lettered again; that letter counts.
    Until session 45 each restart that rebuilt lettered it once more. It
    is still sent (and counted refused again), the broker's refusal as the
    encoding's: not skipped on the letter's word (docs/design.md, session 46)."""
    body = e.message.body
    namespace, work_id, name = body.get("namespace") or "live", body.get("work_id"), \
        body.get("product_name")
    stage2 = failed is not None and body.get("stage") == "stage2" and all(
        isinstance(v, str) for v in (namespace, work_id, name))
    if stage2 and (known := failed.known(namespace, work_id, name)) is not None:
        log.info("the planner's %s for %r refused again (%s); its dead letter %s is on the "
                 "topic already: not lettered again", e.message.type, e.key[:200],
                 str(exc)[:200], known.letter_id[:16],
                 extra={"exposure_id": name, "stage": "planner"})
        failed.pending.append(known)
        return
    reason = f"the planner's {e.message.type} for {e.key[:200]!r} cannot be sent: {exc}"
    letter_id = await publisher.dead_letter(
        category="invalid_message", stage="planner", key=e.key, reason=reason,
        exposure_id=_text(e.message.get("exposure_id")),
        about=str(e.message.get("event_id")), unsent=e.message, unsent_topic=topic,
        order=order_identity(e.message.body))
    if stage2 and isinstance(letter_id, str):
        failed.pending.append(Stage2Failure(namespace, work_id, name, reason[:REASON_SHOWN],
                                            letter_id, failed_record=letter_id))


async def publish_emits(emits: list[Emit], *, publisher, topics: Topics, ledger: PlannerLedger,
                        metrics: Metrics, cfg: Any, unacked: Unacknowledged | None = None,
                        failed: RefusedOrders | None = None) -> list[Refused]:
    """Send ``emits`` in order; the ones other than work orders the encoding
    refused, with why. ``unacked``: work orders are sent without waiting
    (see Unacknowledged). ``failed``: as ``refused_order``'s."""
    refused = []
    for e in emits:
        if unacked is not None and e.topic.startswith("work."):
            topic = topic_for(topics, e)
            try:
                answered = await publisher.send(topic, e.key, e.message)
            except contract.InvalidMessage as exc:  # the encoding's, or the producer's size check
                await refused_order(publisher, e, topic, exc, failed)
                continue
            except Exception as exc:  # noqa: BLE001 - the broker's fault: the waited way
                if broker_fault(exc) is None:
                    raise
                try:
                    if await publisher.publish(topic, e.key, e.message) is not False:
                        _count_and_log(e, metrics)
                except RecordRefused as again:  # refused when sent again
                    await refused_order(publisher, e, topic, again, failed)
                continue
            if answered is not None:  # None: withheld (a standby)
                unacked.sent.append((e, topic, answered))
            continue
        if e.topic == "holds":
            # Kept before it is sent: whoever sees the record on the topic
            # (and then stops the daemon, or loses the broker) must find
            # it kept. A kept record the broker never got is re-published
            # at the next start (and checked again there).
            await keep(ledger, "holds", e.message.body, cfg=cfg, metrics=metrics)
        try:
            sent = await publisher.publish(topic_for(topics, e), e.key, e.message)
        except contract.InvalidMessage as exc:
            if e.topic.startswith("work."):  # the encoding's or the broker's: as settle's
                await refused_order(publisher, e, topic_for(topics, e), exc, failed)
                continue
            refused.append(Refused(e, f"the planner's {e.message.type} for {e.key[:200]!r} "
                                      f"cannot be sent: {exc}"))
            continue
        if sent is False:
            continue  # withheld: a standby publishes nothing (doers/planner_standby.py)
        _count_and_log(e, metrics)
    return refused


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count_and_log(e: Emit, metrics: Metrics) -> None:
    if e.topic in ("work.stage2", "work.stage3"):
        stage = e.topic.removeprefix("work.")
        metrics.work_orders.labels(stage=stage,
                                   degraded=str(bool(e.message["degraded"])).lower()).inc()
        degraded = f", degraded: {e.message['degraded']}" if e.message["degraded"] else ""
        if stage == "stage3":
            version = e.message.get("version") or 1
            if version > 1:
                metrics.superseded.inc()
            log.info("%s: stage-3 work order (%s, version %d, %d member(s)%s)", e.key,
                     e.message["pipeline"], version, len(e.message.get("members") or []),
                     degraded, extra={"exposure_id": e.key, "stage": "planner"})
        else:
            log.info("%s: stage-2 work order (%s%s)", e.key, e.message["pipeline"], degraded,
                     extra={"exposure_id": e.key, "stage": "planner"})
    elif e.topic == "holds":
        release = e.message.get("release")
        log.warning("%s: %s (%s)", e.key, e.message["state"],
                    f"by {release['path']}: {release['reason']}" if release
                    else e.message["reason"],
                    extra={"exposure_id": e.key, "stage": "planner"})
    elif e.topic == "deadletter":
        metrics.dead_letters.labels(stage="planner", category=e.message["category"]).inc()


class Faults:
    """Faults the planner survives outside any record (a tick's decisions, its
    status): each distinct one is logged once with its traceback and counted
    every time, so a fault repeated every second neither floods the log nor
    hides (``calstream_planner_faults_total``)."""

    LOGGED = 1000  # distinct reasons remembered; more are logged again (bounded memory)

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._seen: set[str] = set()

    def survived(self, part: str, exc: BaseException) -> None:
        self.metrics.planner_faults.labels(part=part).inc()
        reason = f"{part}: {error_text(exc)}"[:500]
        if reason in self._seen:
            return
        if len(self._seen) < self.LOGGED:
            self._seen.add(reason)
        log.error("planner: %s (the planner goes on)", reason, exc_info=exc)
