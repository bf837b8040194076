"""Publishing messages: validated on the way out, acknowledged by the broker,
and dead letters in one place."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAuthorizationFailedError
from aiokafka.structs import ConsumerRecord

import calstream
from calstream.daemon.deciders import broker_access
from calstream.daemon.doers.dead_letter_ledger import DeadLetterLedger
from calstream.daemon.doers.noted_places import NotedPlace, product_events_place
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract, dead_letters
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.publisher")

PRODUCER_INFO = {"host": socket.gethostname(), "calstream_version": calstream.__version__}


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics, metrics: Metrics,
                 role: str = "daemon", work_dir: Path | None = None,
                 ledger: DeadLetterLedger | None = None,
                 product_place: NotedPlace | None = None):
        """``work_dir``: where the dead letters sent are kept (dead_letter_ledger.py),
        or ``ledger``, one already made; neither: none kept. A daemon with the
        planner role also notes there where its newest product event went
        (``product_place``, if not given): its recovery judges the products
        topic by it (broker_recovery.py)."""
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

    def with_producer(self, producer: AIOKafkaProducer) -> Publisher:
        """This publisher's topics, metrics, role and dead-letter ledger with
        another producer (the planner's thread has its own)."""
        return Publisher(producer, self.topics, self.metrics, self.role, ledger=self.ledger,
                         product_place=self.product_place)

    async def publish(self, logical_topic: str, key: str, message: contract.Message) -> None:
        """Send and wait for the broker's acknowledgement (acks=all)."""
        placed = await (await self._hand_over(logical_topic, key, message))
        if (noted := self._noted.get(logical_topic)) is not None:
            # Where it went: a topic that no longer holds it there lost it
            # (broker_recovery.py).
            await anyio.to_thread.run_sync(noted.note, message.body["event_id"],
                                           placed.topic, placed.partition, placed.offset)

    async def keep_redrives(self, record: ConsumerRecord) -> None:
        """The ``calstream-redrive`` marks of a record consumed, kept with the
        dead letters they name if this daemon keeps them: a broker that
        loses both gets the marks back with the letters
        (dead_letter_ledger.py). Most records have no headers: no thread."""
        headers = getattr(record, "headers", None)  # a record made by hand may have none
        if headers and self.ledger is not None:
            await anyio.to_thread.run_sync(self.ledger.keep_redrives, record)

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
        idempotent by its key or event id). Returns how many were sent;
        ``placed``, if given, gets each one's metadata (topic, partition,
        offset), in the order of ``items``."""
        answers, refused = [], None
        for topic, key, message, *headers in items:
            try:
                answer = await self.send(topic, key, message, *headers)
            except Exception as exc:  # noqa: BLE001 - raised below, once the rest answered
                refused = exc
                break
            if answer is not None:
                answers.append(answer)
        results = await asyncio.gather(*answers, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result
        if refused is not None:
            raise refused
        if placed is not None:
            placed.extend(results)
        return len(answers)

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
            await anyio.to_thread.run_sync(self.ledger.keep_letter, message.body)
        extra = {"headers": headers} if headers else {}  # most records have none
        return await self.producer.send(self.topics.name(logical_topic), value=value,
                                        # a file name that is not UTF-8 (a bad_file's key)
                                        key=key.encode("utf-8", "backslashreplace"), **extra)

    async def dead_letter(self, *, category: str, reason: str, stage: str, key: str,
                          attempts: int = 0, record: ConsumerRecord | None = None,
                          about: str | None = None, **extra: Any) -> None:
        """Nothing is dropped silently: everything that cannot go on goes here.
        ``about``: what, besides the record (or key, digest and path), tells
        this dead letter from another (a refused message's event id)."""
        original = _original(record) if record is not None else None
        identity = (original and [original["topic"], original["partition"], original["offset"]]) \
            or [key, extra.get("digest"), extra.get("path")]
        if about is not None:
            identity = [*identity, about]
        message = contract.build(
            "dead_letter", contract.event_id("dead_letter", stage, category, *identity),
            **dead_letters.letter_fields(category=category, reason=reason, stage=stage,
                                         attempts=attempts, original=original, **extra))
        await self.publish("deadletter", dead_letters.bounded(key, dead_letters.KEY_BUDGET), message)
        self.metrics.dead_letters.labels(stage=stage, category=category).inc()
        # Flood-controlled per stage and category (operations/logs.py): the
        # topic and the metric above have every one.
        log.warning("dead letter [%s/%s] %s: %s", stage, category, key, reason,
                    extra={"exposure_id": extra.get("exposure_id"), "stage": stage,
                           "category": category})


def _granted(role: str) -> frozenset[str] | None:
    """The topics a daemon of ``role`` (its roles joined by "+") may write;
    None for a publisher that is not a daemon's (a tool's, a test's)."""
    roles = role.split("+")
    if not all(r in broker_access.ROLE_WRITES for r in roles):
        return None
    return broker_access.granted_writes(roles)


def broker_fault(exc: BaseException) -> str | None:
    """"broker_unreachable" when ``exc`` says the broker did not answer (a time-out,
    no connection, no leader yet): sending again later can succeed. None for the
    rest (a message refused for what it is)."""
    if isinstance(exc, KafkaError) and (exc.retriable or isinstance(exc, KafkaTimeoutError)):
        return "broker_unreachable"
    return None


def _original(record: ConsumerRecord) -> dict[str, Any]:
    # Bounded: a dead letter must always fit under the producer's size limit.
    return dead_letters.original_record(
        topic=record.topic, partition=record.partition, offset=record.offset, key=record.key,
        value=record.value, timestamp_ms=record.timestamp)
