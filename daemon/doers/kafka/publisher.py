"""Publishing messages: validated on the way out, acknowledged by the broker,
and dead letters in one place."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAuthorizationFailedError
from aiokafka.structs import ConsumerRecord

import calstream
from calstream.daemon.deciders import broker_access, broker_refusals
from calstream.daemon.doers.dead_letter_ledger import DeadLetterLedger
from calstream.daemon.doers.file_reads import READ_SECONDS, WORK_DIR_HUNG, FileReads, ReadHung
from calstream.daemon.doers.noted_places import NotedPlace, product_events_place
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract, dead_letters
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.publisher")

PRODUCER_INFO = {"host": socket.gethostname(), "calstream_version": calstream.__version__}


class RecordRefused(contract.InvalidMessage):
    """The broker refused this record for what it is (too large for the topic,
    a policy: deciders/broker_refusals.py). A fact about the message, as the
    encoding's refusal is: each sender's handling of an InvalidMessage (a
    dead letter for the work it came from, the sender going on) applies.
    Sent again it is refused again; before, it was retried for ever."""

    def __init__(self, logical_topic: str, key: str, code: str, why: str,
                 error: BaseException):
        super().__init__(f"the broker refused the record for topic {logical_topic} "
                         f"(key {key[:200]!r}): {why} ({code}: {error})")
        self.logical_topic, self.code = logical_topic, code


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics, metrics: Metrics,
                 role: str = "daemon", work_dir: Path | None = None,
                 ledger: DeadLetterLedger | None = None,
                 product_place: NotedPlace | None = None,
                 backup_seconds: float = READ_SECONDS):
        """``work_dir``: where the dead letters sent are kept (dead_letter_ledger.py),
        or ``ledger``, one already made; neither: none kept. A daemon with the
        planner role also notes there where its newest product event went
        (``product_place``, if not given): its recovery judges the products
        topic by it (broker_recovery.py). ``backup_seconds``: the time a
        write of those copies is given (``_backed_up``)."""
        self.producer = producer
        self.topics = topics
        self.metrics = metrics
        self.role = role
        self.ledger = ledger if ledger is not None or work_dir is None \
            else DeadLetterLedger(work_dir)
        self.granted = _granted(role)
        if product_place is None and work_dir is not None and "planner" in role.split("+"):
            product_place = product_events_place(work_dir)
        self.product_place = product_place
        # Where the newest record sent went, by logical topic: a topic that no
        # longer holds it there lost it (noted_places.py).
        self._noted = {topic: place for topic, place in (
            ("deadletter", self.ledger.place if self.ledger is not None else None),
            ("products", product_place)) if place is not None}
        self.backup_seconds = backup_seconds
        self._backups: FileReads | None = None  # made on this publisher's loop, at first use

    def with_producer(self, producer: AIOKafkaProducer) -> Publisher:
        """This publisher's topics, metrics, role and dead-letter ledger with
        another producer (the planner's thread has its own)."""
        return Publisher(producer, self.topics, self.metrics, self.role, ledger=self.ledger,
                         product_place=self.product_place, backup_seconds=self.backup_seconds)

    async def publish(self, logical_topic: str, key: str, message: contract.Message) -> None:
        """Send and wait for the broker's acknowledgement (acks=all)."""
        placed = await (await self._hand_over(logical_topic, key, message))
        if (noted := self._noted.get(logical_topic)) is not None:
            # Where it went: a topic that no longer holds it there lost it
            # (broker_recovery.py).
            await self._backed_up(f"{logical_topic}_place", noted.root, noted.note,
                                  message.body["event_id"], placed.topic, placed.partition,
                                  placed.offset)

    async def keep_redrives(self, record: ConsumerRecord) -> None:
        """The ``calstream-redrive`` marks of a record consumed, kept with the
        dead letters they name if this daemon keeps them: a broker that
        loses both gets the marks back with the letters
        (dead_letter_ledger.py). Most records have no headers: no thread."""
        headers = getattr(record, "headers", None)  # a record made by hand may have none
        if headers and self.ledger is not None:
            await self._backed_up("redrive", self.ledger.work_dir, self.ledger.keep_redrives,
                                  record)

    async def _backed_up(self, kept: str, work_dir: Path, fn: Callable[..., Any],
                         *args: Any) -> None:
        """``fn(*args)``, a write of a copy in the work directory (the
        dead-letter ledger, its redrive notes, a noted place), in a thread
        given ``backup_seconds`` (PlannerLedger.timed's mechanism, FileReads).
        In anyio's threads, untimed, a silent work directory (a hard NFS
        mount whose server is away) held every dead letter's sender (a
        stage, the planner) for ever. The copy is a backup of the topic: past
        its time the thread is left behind and the record is sent all the
        same; until it returns, every other such write in ``work_dir`` is
        skipped at once, not kept (a broker that loses that record will not
        get it back). Keyed by the work directory, not by file: one storage,
        and keyed by file a dead letter waited for its copy, then again for
        its place. Each unkept write is counted
        (calstream_backups_unkept_total{kept, cause="work_dir_hung"})."""
        if self._backups is None:
            self._backups = FileReads(1, self.backup_seconds)
        try:
            await self._backups.timed(lambda _: fn(*args), work_dir, self.backup_seconds,
                                      what=f"{kept} copy's write", cause=WORK_DIR_HUNG)
        except ReadHung as exc:
            self.metrics.backups_unkept.labels(kept=kept, cause=exc.cause).inc()
            if exc.job is None:  # skipped behind one still hung: its line was said
                log.debug("%s: not kept (%s), sent all the same", kept, exc)
                return
            log.error("%s in %s not kept, no answer within %g s (%s): sent all the same; "
                      "until the work directory answers each is sent without its copy "
                      "(calstream_backups_unkept_total{kept=%r})", kept, work_dir, exc.seconds,
                      exc.cause, kept, extra={"fault": "infrastructure"})

    def unkept(self) -> Publisher:
        """This publisher without its dead-letter ledger: for sending again
        the dead letters it kept (each would be written and synced again)."""
        return Publisher(self.producer, self.topics, self.metrics, self.role)

    async def publish_all(self, items: Iterable[tuple], placed: list | None = None) -> int:
        """``publish`` of each of ``items`` (logical topic, key, message, and
        optionally the record's headers: a dead letter put back carries its
        redrives, broker_recovery.py): all
        sent without waiting, then every acknowledgement awaited, so that
        what a broker that lost its topics gets again (thousands of records
        at a start on the embedded broker) costs one round trip to it, not
        one each (bench/republishing.py). A partition's records keep their
        order while the sends succeed; the first failure is raised once every
        answer is in, and the caller sends the set again (each record is
        idempotent by its key or event id). A record the broker refuses for
        what it is (RecordRefused) is not a failure of the set: sent again it
        would be refused again, and the set with it for ever; it is logged
        and counted, and left out. Returns how many were sent;
        ``placed``, if given, gets each one's metadata (topic, partition,
        offset), in the order of ``items``, None for one refused."""
        answers: list = []
        failed = None
        for topic, key, message, *headers in items:
            try:
                answer = await self.send(topic, key, message, *headers)
            except RecordRefused as exc:
                answers.append(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - raised below, once the rest answered
                failed = exc
                break
            if answer is not None:
                answers.append(answer)
        results = await asyncio.gather(
            *(a for a in answers if not isinstance(a, RecordRefused)), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, RecordRefused):
                raise result
        if failed is not None:
            raise failed
        answered = iter(results)
        outcomes = [a if isinstance(a, RecordRefused) else next(answered) for a in answers]
        for refused in (o for o in outcomes if isinstance(o, RecordRefused)):
            # A record's fault: flood-controlled as one (operations/logs.py),
            # counted in calstream_records_refused_total.
            log.error("%s: left out, not sent again", refused,
                      extra={"stage": refused.logical_topic, "fault": "data"})
        if placed is not None:
            placed.extend(None if isinstance(o, RecordRefused) else o for o in outcomes)
        return sum(not isinstance(o, RecordRefused) for o in outcomes)

    async def send(self, logical_topic: str, key: str, message: contract.Message,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future | None:
        """``publish`` without the wait: the future of the broker's
        acknowledgement, for the caller to await (None: nothing was sent).
        Raises what ``publish`` raises before sending (a refused message)."""
        return await self._hand_over(logical_topic, key, message, headers)

    async def _hand_over(self, logical_topic: str, key: str, message: contract.Message,
                         headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future:
        if self.granted is not None and logical_topic not in self.granted:
            # What a broker with calstream's ACLs answers (deciders/broker_access.py):
            # refused here too, so that a run on a broker without ACLs (the
            # embedded one, every test) finds a write the table does not grant.
            raise TopicAuthorizationFailedError(
                f"role {self.role} is not granted writes to {logical_topic} "
                "(daemon/deciders/broker_access.py)")
        message.body.setdefault("producer", {**PRODUCER_INFO, "role": self.role})
        value = contract.encode(message)  # validates: a bad message never leaves
        if logical_topic == "deadletter" and self.ledger is not None:
            # Kept before it is sent: a broker that loses it gets it again.
            await self._backed_up("dead_letter", self.ledger.work_dir, self.ledger.keep_letter,
                                  message.body)
        extra = {"headers": headers} if headers else {}  # most records have none
        try:
            answer = await self.producer.send(
                self.topics.name(logical_topic), value=value,
                # a file name that is not UTF-8 (a bad_file's key)
                key=key.encode("utf-8", "backslashreplace"), **extra)
        except Exception as exc:  # noqa: BLE001 - the producer's own size check, named
            if (refused := self._refused(exc, logical_topic, key)) is None:
                raise
            raise refused from exc
        return self._answer_named(answer, logical_topic, key)

    def _answer_named(self, answer: asyncio.Future, logical_topic: str,
                      key: str) -> asyncio.Future:
        """The broker's answer, with a refusal of the record raised as
        RecordRefused (the rest as aiokafka raised it)."""
        named = asyncio.get_running_loop().create_future()

        def answered(done: asyncio.Future) -> None:
            exc = None if done.cancelled() else done.exception()  # retrieved: never "unretrieved"
            if named.done():  # its awaiter was cancelled
                return
            if done.cancelled():
                named.cancel()
            elif exc is not None:
                named.set_exception(self._refused(exc, logical_topic, key) or exc)
            else:
                named.set_result(done.result())
        answer.add_done_callback(answered)
        return named

    def _refused(self, exc: BaseException, logical_topic: str, key: str) -> RecordRefused | None:
        """``exc`` as RecordRefused, counted, if it refuses the record for what it is."""
        refused = record_refused(exc, logical_topic, key)
        if refused is not None:
            self.metrics.records_refused.labels(topic=logical_topic, code=refused.code).inc()
        return refused

    async def dead_letter(self, *, category: str, reason: str, stage: str, key: str,
                          attempts: int = 0, record: ConsumerRecord | None = None,
                          about: str | None = None, unsent: contract.Message | None = None,
                          unsent_topic: str | None = None, **extra: Any) -> str:
        """Nothing is dropped silently: everything that cannot go on goes here.
        ``about``: what, besides the record (or key, digest and path), tells
        this dead letter from another (a refused message's event id).
        ``unsent``: a message the broker or the encoding refused, for logical
        topic ``unsent_topic`` under ``key``: the letter's original, with no
        place on the topic (it never had one). Returns the letter's event id,
        sent or not (the planner counts a refused order's failure by it)."""
        original = _original(record) if record is not None else None
        identity = (original and [original["topic"], original["partition"], original["offset"]]) \
            or [key, extra.get("digest"), extra.get("path")]
        if unsent is not None and unsent_topic is not None and original is None:
            original = _unsent_original(self.topics.name(unsent_topic), key, unsent)
        if about is not None:
            identity = [*identity, about]
        message = contract.build(
            "dead_letter", contract.event_id("dead_letter", stage, category, *identity),
            **dead_letters.letter_fields(category=category, reason=reason, stage=stage,
                                         attempts=attempts, original=original, **extra))
        try:
            sent = await self.publish("deadletter",
                                      dead_letters.bounded(key, dead_letters.KEY_BUDGET), message)
        except RecordRefused as exc:
            # The dead-letter topic refuses it too: a letter about the letter
            # would be refused alike. Said and counted
            # (calstream_records_refused_total{topic="deadletter"}); the
            # sender goes on. `deadletters list` reads the topic: the log
            # line, and the ledger's copy if this daemon keeps one, are where
            # it is. A record's fault, flood-controlled as one at ERROR too
            # (operations/logs.py): a topic refusing every letter wrote a line
            # for each, where every other dead letter's line is summarised.
            kept = f"; kept in {self.ledger.root}" if self.ledger is not None else ""
            log.error("dead letter [%s/%s] %s not sent (event %s%s): %s; what it said: %s",
                      stage, category, key[:200], message.event_id, kept, exc,
                      dead_letters.bounded(reason, 500),
                      extra={"exposure_id": extra.get("exposure_id"), "stage": stage,
                             "category": category, "fault": "data"})
            return message.event_id
        if sent is False:
            # Withheld (a standing-by planner, planner_leadership.GatedPublisher):
            # the leader letters it; counted and said here too, one letter was
            # two in the metric across the pair, and "dead letter" was logged
            # for one never sent.
            log.info("dead letter [%s/%s] %s withheld (standing by): %s", stage, category,
                     key[:200], dead_letters.bounded(reason, 500))
            return message.event_id
        self.metrics.dead_letters.labels(stage=stage, category=category).inc()
        # Flood-controlled per stage and category (operations/logs.py): the
        # topic and the metric above have every one.
        log.warning("dead letter [%s/%s] %s: %s", stage, category, key, reason,
                    extra={"exposure_id": extra.get("exposure_id"), "stage": stage,
                           "category": category})
        return message.event_id


def record_refused(exc: BaseException, topic: str, key: str) -> RecordRefused | None:
    """``exc`` as RecordRefused if it refuses the record sent to ``topic``
    for what it is (deciders/broker_refusals.py); None otherwise."""
    refusal = broker_refusals.record_refusal(exc)
    if refusal is None:
        return None
    refused = RecordRefused(topic, key, *refusal, exc)
    refused.__cause__ = exc
    return refused


def _granted(role: str) -> frozenset[str] | None:
    """The topics a daemon of ``role`` (its roles joined by "+") may write;
    None for a publisher that is not a daemon's (a tool's, a test's)."""
    roles = role.split("+")
    if not all(r in broker_access.ROLE_WRITES for r in roles):
        return None
    return broker_access.granted_writes(roles)


def broker_fault(exc: BaseException) -> str | None:
    """"broker_unreachable" when ``exc`` says the broker did not answer (a time-out,
    no connection, no leader yet); "topic_not_authorized" when it refuses this
    principal the topic (an ACL to grant), "broker_error" when it refused
    without a reason: sending again later can succeed, parked meanwhile. None
    for the rest (a message refused for what it is: RecordRefused)."""
    if isinstance(exc, KafkaError) and (exc.retriable or isinstance(exc, KafkaTimeoutError)):
        return "broker_unreachable"
    return broker_refusals.standing_refusal(exc)


def _unsent_original(topic: str, key: str, message: contract.Message) -> dict[str, Any]:
    """The ``original`` of a letter for ``message``, refused by the broker on
    its way to ``topic``: what it would have been, bounded as a record's, but
    with no partition or offset (the contract's are whole numbers: it had
    none). A reader of the planner's letters counts a stage-2 order in it
    as failed (deciders/stage2_failures.py). A body JSON has no text for (a
    decider's bug the encoding refused) is kept as its ``str``: the letter
    must go all the same."""
    try:
        value = contract.compact_json(message.body)
    except (TypeError, ValueError):
        value = str(message.body).encode("utf-8", "backslashreplace")
    placed = dead_letters.original_record(
        topic=topic, partition=0, offset=0, key=key.encode("utf-8", "backslashreplace"),
        value=value, timestamp_ms=None)
    return {k: v for k, v in placed.items() if k not in ("partition", "offset")}


def _original(record: ConsumerRecord) -> dict[str, Any]:
    # Bounded: a dead letter must always fit under the producer's size limit.
    return dead_letters.original_record(
        topic=record.topic, partition=record.partition, offset=record.offset, key=record.key,
        value=record.value, timestamp_ms=record.timestamp)
