"""What a broker that lost its records gets again: the product events from the
product store (the live tree's and every replay namespace's), the dead
letters from the ledger of the daemon that sent them (dead_letter_ledger.py).
The plans and holds of the planner's ledger are put back by the planner
that acts (planner_disk_records.republish_when_owed), whatever its role at
the loss.

The broker is the transport, the product store the ledger: the embedded
broker keeps its topics in memory, and a Kafka topic can be lost or
recreated. A daemon with the planner role puts back what the planner and the
operators' commands read, at start and after the embedded broker restarted.

Whether a topic lost its records is judged by a noted place (noted_places.py):
where the broker put the newest record of the kind this daemon sent. A topic
merely "not empty" proves nothing: one event sent since the broker came back
(a run that ended, another daemon's put back first) hid the loss of every
record before it. With no usable note (the first start), an empty topic is
a loss; one that is not gets its last record's place noted: the planner's own
daemon sends no product event (the stages' daemons do), and without it every
later check was by emptiness again.

Re-publishing is resumable. A run cut off part-way (the broker lost again,
the daemon killed) leaves the topic holding part of it: so a marker (for the
product events ``<work_dir>/planner/republishing-product-events.json``) is
written before the first record and removed after the last; while it is
there, every start (and every retry of the start step) does it again. Each
time, what the topic already holds (by event id) is not sent again: each
lost record is put back once.

Every call on the work directory (the markers, the dead-letter ledger and
its redrives, the noted places) and the product store's read is timed
(FileReads, ``reads``: the daemon's, StartWaits.reads, kept across tries):
in anyio's threads, untimed, a silent mount (a hard NFS mount whose server
is away) held the start's step "trying" for ever, or the supervisor's
putting back after a broker's return, and a stop waited for the thread.
Past its time the call is left behind and ReadHung raised (work_dir_hung,
store_hung): the start's step parks and tries again, the supervisor tries
again later; until the call returns, every other on that storage is
refused at once, no second thread (session 45).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from calstream.daemon.deciders import record_places
from calstream.daemon.doers import kafka
from calstream.daemon.doers.durable_files import write_json_atomically
from calstream.daemon.doers.file_reads import FileReads
from calstream.daemon.doers.kafka import Publisher
from calstream.daemon.doers.noted_places import NotedPlace, product_events_place
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.recovery_reads import RecoveryReads
from calstream.daemon.operations.config import Config
from calstream.steps.regular_files import set_aside_unless_regular
from calstream.topics import contract, dead_letters
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.daemon")
T = TypeVar("T")

MARKER = "republishing-product-events.json"
MARKER_IS = "re-publishing marker"
DEAD_LETTERS_MARKER = "republishing-dead-letters.json"  # in the dead-letter ledger's root


def marker_path(work_dir: Path) -> Path:
    return PlannerLedger(work_dir).root / MARKER


async def recover_lost_records(cfg: Config, topics: Topics, store: ProductStore,
                               publisher: Publisher, *, emptied: bool = False,
                               missing: frozenset[str] = frozenset(),
                               reads: FileReads | None = None) -> None:
    """At start and after the embedded broker restarted: the product events
    (a daemon with the planner role) and this daemon's dead letters, each
    unless its topic is among ``missing`` (the broker lacks it: nothing can
    be put back there yet). ``emptied``: the broker is known to have lost
    every record (see recover_product_events). ``reads``: what times the
    calls on the work directory and the store (the module's docstring)."""
    reads = reads or FileReads(1)  # one for both: a call left hung is not made again
    if topics.name("products") not in missing:
        await recover_product_events(cfg, topics, store, publisher, emptied=emptied,
                                     reads=reads)
    if topics.name("deadletter") not in missing:
        await recover_dead_letters(cfg, topics, publisher, reads=reads)


async def after_broker_back(cfg: Config, topics: Topics, store: ProductStore,
                            publisher: Publisher, *, emptied: bool = False,
                            reads: FileReads | None = None) -> None:
    """An external broker answering again after a loss (BrokerSupervisor's
    ``on_back``): it may have come back empty (a node on a fresh volume,
    another daemon's embedded broker started again), so its topics are made
    and what this daemon puts back at start is put back, each part checking
    first, cheaply, that anything was lost (``recover_lost_records``). A
    catalog topic still missing (not this daemon's to make, or refused)
    holds back only what goes on it: the rest is put back, then
    TopicsMissing is raised for the supervisor to try again. (Before, one
    topic an admin had not made again kept every other topic's records
    from being put back.)"""
    try:
        await kafka.create_topics(cfg, topics, create=cfg.create_topics)
    except kafka.TopicsMissing as exc:
        await recover_lost_records(cfg, topics, store, publisher, emptied=emptied,
                                   missing=frozenset(exc.missing), reads=reads)
        raise
    await recover_lost_records(cfg, topics, store, publisher, emptied=emptied, reads=reads)


async def recover_dead_letters(cfg: Config, topics: Topics, publisher: Publisher, *,
                               reads: FileReads | None = None) -> None:
    """A dead-letter topic that lost this daemon's records, or a re-publishing
    of them cut off part-way, gets every dead letter this daemon kept that
    it lacks, with its event id and first ``emitted_at``, and the redrives
    kept of it as ``calstream-redrive`` headers. Lost: the place
    noted for the newest one sent no longer holds it (the topic ends before
    it, or holds another record there: recreated, and another daemon's put
    back first), or, with no usable note, the topic is empty. Retention
    removing it is no loss. A topic that still has them is not read (on
    Kafka it may hold months of records). A kept file is untrusted: one
    that is no valid dead letter is left out."""
    ledger = publisher.ledger
    if ledger is None:
        return
    name = topics.name("deadletter")
    timed = RecoveryReads(cfg, reads)

    async def send(kept: list[dict], unfinished: bool) -> int:
        # What a cut-off re-publishing already sent: no second copy.
        on_topic = await _on_topic(cfg, name, "dead_letter")
        lost = [body for body in kept if body.get("event_id") not in on_topic
                and contract.is_valid("dead_letter", body)]
        # Each with the redrives kept of it: their marks were on topics the
        # broker lost too, and `deadletters list` reads them here now.
        redrives = await timed.ledger_read("dead-letter ledger's redrives' read",
                                           ledger.redrives)
        placed: list = []
        sent = await publisher.unkept().publish_all((  # kept already: not written again
            ("deadletter", dead_letters.bounded(str(body.get("exposure_id") or body.get("path")
                                                    or body.get("stage")),
                                                dead_letters.KEY_BUDGET),
             contract.Message("dead_letter", body),
             [(dead_letters.REDRIVE_HEADER, json.dumps(note).encode())
              for note in redrives.get(body["event_id"], ())]) for body in lost), placed)
        await _note_newest(timed, ledger.place, kept, on_topic, lost, placed)
        return sent

    sent = await _refill(cfg, timed, name, ledger.root / DEAD_LETTERS_MARKER,
                         partial(timed.ledger_read, "dead-letter ledger's read", ledger.letters),
                         send, lost=partial(_lost_by_note, cfg, timed, ledger.place,
                                            "dead_letter"))
    if sent:
        log.warning("the broker had lost %d dead letter(s): re-published from %s", sent,
                    ledger.root)


async def recover_product_events(cfg: Config, topics: Topics, store: ProductStore,
                                 publisher: Publisher, *, emptied: bool = False,
                                 reads: FileReads | None = None) -> None:
    """A broker that lost its product events (or a re-publishing cut off
    part-way) gets each one it lacks again, once, with the same event ids,
    so the planner can rebuild. Lost: the place noted for the newest one
    sent (noted_places.py) no longer holds it (the topic ends before it, or
    holds another record there: restored from an old disk, recreated), or,
    with no usable note, the topic is empty. Retention removing it is no
    loss. Broker and disk faults are raised for the caller to retry.

    ``emptied``: the broker is known to have started again with nothing (the
    embedded one on memory), so it lost them whatever the topic holds by
    now: the stages keep running through its restart, and a run that ended
    meanwhile sends its event as soon as the topic is made, before any
    check could look. The events the topic holds by then (that one, those a
    cut-off re-publishing sent) are not sent a second time."""
    if "planner" not in cfg.roles:
        return
    marker = marker_path(cfg.work_dir)
    name = topics.name("products")
    place = publisher.product_place or product_events_place(cfg.work_dir)
    timed = RecoveryReads(cfg, reads)

    async def send(records: list[dict], unfinished: bool) -> int:
        if unfinished:
            log.warning("an earlier re-publishing of the product events did not finish (%s "
                        "is there): re-publishing what the topic lacks of %d", marker,
                        len(records))
        # A record is untrusted: one whose event no reader would take (edited
        # by hand, another version's) is left out; refused by the encoding,
        # it stopped every start.
        events = [r["event"] for r in records]
        usable = [e for e in events if contract.is_valid("product", e)]
        if len(usable) < len(events):
            log.warning("%d provenance record(s) in %s hold no valid product event: left "
                        "out of the re-publishing (e.g. %s)", len(events) - len(usable),
                        cfg.products, ", ".join(sorted(
                            str(e.get("product_name"))[:100] for e in events
                            if not contract.is_valid("product", e))[:3]))
        # The topic after a loss holds only what reached it since: those
        # are not sent again (each event once on the topic).
        on_topic = await _on_topic(cfg, name, "product")
        lost = [e for e in usable if e.get("event_id") not in on_topic]
        placed: list = []
        # The original emitted_at: holds and companion waits date from it.
        sent = await publisher.publish_all(
            (("products", e["program"], contract.Message("product", dict(e))) for e in lost),
            placed)
        await _note_newest(timed, place, usable, on_topic, lost, placed)
        return sent

    sent = await _refill(cfg, timed, name, marker, partial(timed.records, store), send,
                         lost=_lost_for_sure if emptied else partial(
                             _lost_by_note, cfg, timed, place, "product"),
                         products=str(cfg.products))
    if sent is not None:
        log.warning("the broker had lost product events: re-published %d from the product "
                    "store %s (the live tree and its replay namespaces), each it lacked once",
                    sent, cfg.products)


async def _on_topic(cfg: Config, name: str, kind: str) -> dict[str, kafka.Record]:
    """The records of kind ``kind`` on topic ``name``, by event id (the last of
    each); only from a broker that answers for it (``_answered``: a topic
    left out read as empty, and each record was sent a second time)."""
    await _answered(cfg, name)
    found = {}
    for record in await kafka.read_to_end(cfg, name):
        try:
            found[contract.decode(record.value, expected=kind).event_id] = record
        except contract.InvalidMessage:
            continue
    return found


async def _note_newest(timed: RecoveryReads, place: NotedPlace, bodies: list[dict], on_topic: dict,
                       sent: list[dict], placed: list) -> None:
    """Note the place of the newest of ``bodies`` (oldest first) on each
    partition of the topic now: found there (``on_topic``) or just ``sent``
    to ``placed``. The next check judges by them and does not read the topic
    again."""
    places = {**{e: (r.topic, r.partition, r.offset) for e, r in on_topic.items()},
              **{b["event_id"]: (p.topic, p.partition, p.offset)
                 for b, p in zip(sent, placed, strict=True)
                 if p is not None}}  # None: the broker refused it (Publisher.publish_all)
    newest: dict[int, tuple] = {}  # partition -> (event id, topic, partition, offset)
    for body in reversed(bodies):
        where = places.get(body.get("event_id"))
        if where is not None and where[1] not in newest:
            newest[where[1]] = (body["event_id"], *where)
    if newest:
        await timed.on_work_dir(f"{place.what}'s note", place.note_all, list(newest.values()))


async def _lost_by_note(cfg: Config, timed: RecoveryReads, place: NotedPlace, kind: str,
                        topic: str) -> bool:
    """Whether ``topic`` lost the records of ``kind`` noted at ``place``: one
    noted (the newest of its partition) is no longer where it was put (GONE,
    or another record there); with no usable note (none yet, another
    prefix's), whether it is empty. Only on a broker that answers for the
    topic (``_answered``)."""
    await _answered(cfg, topic)
    notes = [n for n in await timed.on_work_dir(f"{place.what}'s read", place.places)
             if n["topic"] == topic]
    if not notes:
        return await _empty_else_noted(cfg, timed, place, kind, topic)
    found = await kafka.records_at(cfg, [(topic, n["partition"], n["offset"]) for n in notes])
    return any(_lost_at(found[(topic, n["partition"], n["offset"])], n["event_id"], kind)
               for n in notes)


async def _answered(cfg: Config, topic: str) -> None:
    """A broker fault (tried again later) if the broker's metadata leaves
    ``topic`` out. The catalog's topics were made just before (at start, and
    when a lost broker is back; one whose making was refused is not judged at
    all): left out now, the broker errors for that topic (a leader being
    elected, a Describe ACL missing: Kafka leaves out what a principal may not
    describe), and what it holds is not known. Judged by its absence, it had
    lost every record: the topic read as empty, and the whole product store
    was sent to it again once it answered; with a Describe ACL missing, at
    every start."""
    await kafka.require_described(cfg, topic, "what it lost is judged once it answers for it")


def _lost_at(found: kafka.Record | str, event_id: str, kind: str) -> bool:
    """Whether ``found`` at a noted place says record ``event_id`` was lost."""
    if isinstance(found, str):
        return found == record_places.GONE  # EXPIRED: retention's doing, not a loss
    try:
        return contract.decode(found.value, expected=kind).event_id != event_id
    except contract.InvalidMessage:
        return True  # not the record sent there


async def _empty_else_noted(cfg: Config, timed: RecoveryReads, place: NotedPlace, kind: str,
                            topic: str) -> bool:
    """Whether ``topic``, judged with no note, is empty (lost); if not, the
    places of its partitions' last records are noted for the next check. A
    daemon may send none of ``kind`` itself (the planner's own daemon: the
    stages send the product events) and find nothing to put back: without
    that note, every later check was by emptiness, and one record sent once
    a broker came back empty hid the loss of all the others."""
    found = await kafka.last_records(cfg, topic)
    if not found:  # none there (or none left as it was read): as before
        return await kafka.is_empty(cfg, topic)
    places = []
    for record in found:
        try:
            event_id = contract.decode(record.value, expected=kind).event_id
        except contract.InvalidMessage:
            continue  # no record of the kind to note there
        places.append((event_id, record.topic, record.partition, record.offset))
    await timed.on_work_dir(f"{place.what}'s note", place.note_all, places)
    return False


async def _lost_for_sure(topic: str) -> bool:
    return True


async def _refill(cfg: Config, timed: RecoveryReads, topic: str, marker: Path,
                  read: Callable[[], Awaitable[list]], send, lost=None,
                  **note) -> int | None:
    """The records ``await read()`` gives, handed to ``send(records, unfinished)``
    when ``topic`` lost its own (``await lost(topic)``; by default: it is
    empty) or an earlier refill was cut
    off part-way: a marker is written before the first record and removed
    after the last, so a run cut off (the broker lost again, the daemon
    stopped) leaves the topic not empty but the marker there, and the next
    try, in the same start or the next, does it again. None when nothing
    was to be done; else what ``send`` returned."""
    unfinished = await timed.on_work_dir(f"{MARKER_IS}'s look", _unfinished, marker)
    if not unfinished and not await (lost(topic) if lost else kafka.is_empty(cfg, topic)):
        return None
    records = await read()
    removal = partial(timed.on_work_dir, f"{MARKER_IS}'s removal", marker.unlink,
                      missing_ok=True)
    if not records:
        await removal()
        return None
    await timed.on_work_dir(f"{MARKER_IS}'s write", lambda: write_json_atomically(marker, {
        "started_at": contract.utc_now(), "records": len(records), **note},
        what=MARKER_IS, root=cfg.work_dir))
    sent = await send(records, unfinished)
    await removal()
    return sent


def _unfinished(marker: Path) -> bool:
    """Whether a re-publishing was under way: whatever lies at the marker's
    name says so (doing it all again is always safe). What is no regular
    file there (a directory) is moved aside, where removing it raised out
    of every start."""
    if not os.path.lexists(marker):
        return False
    set_aside_unless_regular(marker, what=MARKER_IS)
    return True
