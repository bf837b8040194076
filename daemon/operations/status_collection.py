"""Collecting what ``calstream status`` shows: what a running deployment is doing.

Two sources, because neither tells the whole story alone:

* the broker says what *waits*: each stage's consumer group's committed
  offsets against the topics' high watermarks (the lag), and the newest dead
  letters and product events;
* each daemon's metrics endpoint says what *runs*: in-flight work, outcomes,
  worker memory and restarts, and whether the daemon is ready.

Everything here is read-only: no group is joined, nothing is committed and
nothing is written to any topic.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import anyio
from prometheus_client.parser import text_string_to_metric_families

from calstream.daemon.doers.file_reads import FileReads
from calstream.daemon.operations.config import ROLES, Config, host_port
from calstream.daemon.operations.dead_letter_redrives import REDRIVES, RedriveReading
from calstream.daemon.operations.holds_view import (
    believed_in_time,
    held,
    last_holds,
    unchecked_note,
)
from calstream.daemon.operations.status_letters import LetterTail
from calstream.daemon.operations.status_summary import (
    BrokerView,
    Endpoint,
    GroupLag,
    PartitionLag,
    Status,
    summarise_metrics,
    summarise_parked,
    summarise_planner,
)
from calstream.daemon.stages import STAGES, stage
from calstream.steps.failures import error_text
from calstream.topics import contract
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.status")

# The topics each stage's consumer group "<group_prefix>.<stage>" reads
# (daemon/stages.py). The planner is not here: it reads every partition of
# products without a group, so it has no lag to report.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {st.name: (st.live_topic, st.replay_topic)
                                             for st in STAGES if st.name in ROLES}


# -- the metrics endpoints ------------------------------------------------

def default_metrics_url(cfg: Config) -> str | None:
    host, port = host_port(cfg.metrics_address)
    if port == 0:
        return None
    return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def endpoint_base(url: str) -> str:
    """'host:port', 'http://host:port' or '.../metrics' -> 'http://host:port'."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    for suffix in ("/metrics", "/readyz", "/healthz"):
        url = url.removesuffix(suffix)
    return url


# What one answer of a daemon's endpoint may be: a daemon's /metrics and
# /planner are kilobytes to a few megabytes.
ANSWER_BYTES = 64 << 20


class UnusableAnswer(OSError):
    """An endpoint's answer that did not come whole in time, or is too large."""


def _body(response, url: str, deadline: float) -> bytes:
    """``response``'s body, read to its end by ``deadline`` and within
    ANSWER_BYTES. The socket's timeout bounds each read only: whatever
    answered at a --metrics-url given that sent a byte now and then, or
    without end, held `calstream status` (and the console) for ever and
    grew it until memory ran out."""
    chunks, size = [], 0
    while chunk := response.read1(1 << 16):
        size += len(chunk)
        if size > ANSWER_BYTES:
            raise UnusableAnswer(f"{url} answers more than {ANSWER_BYTES} bytes")
        if time.monotonic() > deadline:
            raise UnusableAnswer(f"{url} did not answer whole in time")
        chunks.append(chunk)
    return b"".join(chunks)


def _fetch(url: str, timeout: float, *, any_status: bool = False) -> bytes:
    """The body at ``url``; ``any_status``: an error status's too (a 503 of
    /readyz carries the reasons), else it raises HTTPError."""
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return _body(response, url, deadline)
    except urllib.error.HTTPError as exc:
        if not any_status:
            raise
        with exc:
            return _body(exc, url, deadline)


def read_endpoint(url: str, timeout: float = 5.0) -> Endpoint:
    base = endpoint_base(url)
    ep = Endpoint(base)
    # Whatever answers at a --metrics-url given wrong (another service, one
    # that speaks no HTTP: BadStatusLine, bytes that are not UTF-8) is an
    # endpoint that is not a daemon's, not a traceback of `calstream status`.
    try:
        text = _fetch(f"{base}/metrics", timeout).decode()
    except (OSError, http.client.HTTPException) as exc:
        ep.error = f"metrics unreachable: {error_text(exc)}"
        return ep
    except UnicodeDecodeError:
        ep.error = "/metrics is not Prometheus text: bytes that are not UTF-8"
        return ep
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                ep.samples.append((s.name, dict(s.labels), s.value))
    except ValueError as exc:
        ep.error = f"/metrics is not Prometheus text: {exc}"
        return ep
    ep.reachable = True
    try:
        body = _fetch(f"{base}/readyz", timeout, any_status=True)
    except (OSError, http.client.HTTPException) as exc:
        ep.error = f"/readyz unreachable: {error_text(exc)}"
        return ep
    # Untrusted, as the rest: a document nested too deep (RecursionError)
    # or problems that are no text raised out of `calstream status`.
    try:
        doc = json.loads(body)
        problems = doc.get("problems", [])
        if type(problems) is not list or not all(type(p) is str for p in problems):
            raise TypeError("problems are not a list of texts")
        ep.ready, ep.problems = bool(doc["ready"]), problems
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        ep.error = f"/readyz answered something unexpected: {body[:200]!r}"
    # 404: this daemon runs no planner. Anything else is a planner view
    # that could not be read (too large, not whole in time, no JSON): said
    # so, where status said no daemon given serves /planner at all.
    try:
        ep.planner = json.loads(_fetch(f"{base}/planner", timeout))
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code != 404:
            ep.planner_error = f"/planner of {base} answered HTTP {exc.code}"
    except (OSError, ValueError, http.client.HTTPException, RecursionError) as exc:
        ep.planner_error = f"/planner of {base} unreadable: {error_text(exc)}"
    return ep


# -- the broker -----------------------------------------------------------

async def _tails(cfg: Config, wanted: dict[str, int | None], view: BrokerView,
                 folds: dict[str, Callable[[list], None]] | None = None):
    """High watermarks of every partition of ``wanted`` (topic -> n), and the
    last n records of each partition (all of them for n = None); the records
    of a topic in ``folds`` are given to its fold a fetch at a time (in a
    thread), never kept: the holds topic, which tansu never compacts, was
    held whole at every look of status and of the console.

    The high watermark comes from fetch responses: end_offsets is wrong on
    tansu (see docs/operations.md), so it only says where to start reading,
    never where the end is. A start below the true end costs a few more
    records; it never loses one.
    """
    from calstream.daemon.doers import kafka
    from calstream.daemon.doers.kafka import topic_reader

    async with kafka.open_reader(cfg, list(wanted), fetch_max_wait_ms=100,
                                 **topic_reader.FOLD_FETCH) as reader:
        view.missing_topics.extend(reader.missing)
        if not reader.partitions:
            return {}, {}, {}
        begin = await reader.start_at_tail(wanted)
        records: dict[str, list] = {t: [] for t in wanted}
        folds = folds or {}
        async for batch in reader.batches_to_end():
            for r in batch:
                if r.topic not in folds:
                    records[r.topic].append(r)
            for topic, fold in folds.items():
                if mine := [r for r in batch if r.topic == topic]:
                    await anyio.to_thread.run_sync(fold, mine)
        return reader.high_watermarks(), begin, records


async def _group_offsets(cfg: Config, group: str, tps: list) -> tuple[dict, int | None, str | None]:
    from calstream.daemon.doers import kafka

    return await kafka.group_offsets(cfg, group, tps)


def _decoded(records, expected: str, view: BrokerView, n: int) -> list[dict[str, Any]]:
    """The newest ``n`` messages of ``records``, each event id once (its
    latest record): a planner that decides again what its snapshot did not
    cover sends a dead letter again under its id, a broker's loss has
    product events sent again, and subscribers, ``deadletters list`` and
    this view count each event once."""
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        try:
            msg = contract.decode(r.value, expected=expected)
        except contract.InvalidMessage:
            view.unreadable += 1
            continue
        latest.pop(msg.event_id, None)  # the latest record, in its own place
        latest[msg.event_id] = {**msg.body, "_topic": r.topic, "_partition": r.partition,
                                "_offset": r.offset}
    # In time, not as text: the contract allows any offset (topics/times.py),
    # and a letter stamped +05:00 sorted by its digits hours from its place.
    out = sorted(latest.values(),
                 key=lambda m: (contract.parse_time(m["emitted_at"]), m["_offset"]))
    return out[-n:] if n else []


async def _mark_redrives(cfg: Config, topics: Topics, marks: list[tuple[list, str]],
                         view: BrokerView, reading: RedriveReading | None) -> None:
    """Each dead letter shown gets its count of redrives (REDRIVES), read as
    `calstream deadletters list` reads them: a redriven one is handled, and
    was counted as needing someone. The originals' topics are read from the
    lowest original of the letters shown, only when some are shown, and on
    from where ``reading`` (the console's, kept) got to; one that cannot be
    read leaves the letters unmarked, said in ``redrives_error``."""
    if not view.dead_letters:
        return
    reading = reading if reading is not None else RedriveReading()
    notes = reading.notes
    shown = {d["event_id"] for d in view.dead_letters}
    for headers, event_id in marks:  # a daemon put them back with its letter, on its record
        if event_id in shown:
            notes.on_letter(headers, event_id)
    try:
        with anyio.move_on_after(reading.budget) as scope:
            await reading.update(cfg, topics, view.dead_letters)
        if scope.cancelled_caught:
            view.redrives_error = (f"the originals' topics were not read to their end within "
                                   f"{reading.budget:.0f}s; the next look reads on from there")
    except Exception as exc:  # noqa: BLE001 - the letters are still worth showing
        view.redrives_error = error_text(exc)
    for letter in view.dead_letters:
        letter[REDRIVES] = len(notes.of(letter["event_id"]))


async def read_broker(cfg: Config, *, dead_letters: int = 10, products: int = 10,
                      redrives: RedriveReading | None = None,
                      ledger_reads: FileReads | None = None) -> BrokerView:
    topics = Topics(cfg.topic_prefix)
    view = BrokerView(cfg.kafka_bootstrap)
    inputs = {topics.name(t) for ins in STAGE_INPUTS.values() for t in ins}
    wanted = {name: 0 for name in inputs}
    wanted[topics.name("deadletter")] = dead_letters
    wanted[topics.name("products")] = products
    # Compacted (on Kafka; tansu never compacts): read it all, the last record
    # of an exposure is its current state on the topic.
    wanted[topics.name("holds")] = None
    topic_holds: dict = {}  # its last hold of each exposure, as `holds list` folds it
    letters = LetterTail(view)
    highs, begin, records = await _tails(cfg, wanted, view, {
        topics.name("holds"): lambda batch: last_holds(batch, view.count_unreadable,
                                                       into=topic_holds),
        topics.name("deadletter"): letters.add})
    for stage_name, logical in STAGE_INPUTS.items():
        group = stage(stage_name).group(cfg.group_prefix)
        for name in (topics.name(t) for t in logical):
            row = GroupLag(stage_name, group, name)
            view.lag.append(row)
            tps = sorted((tp for tp in highs if tp.topic == name), key=lambda tp: tp.partition)
            if not tps:
                row.error = "topic does not exist"
                continue
            try:
                offsets, row.members, row.state = await _group_offsets(cfg, group, tps)
            except Exception as exc:
                row.error = f"cannot read the group's offsets: {exc}"
                continue
            for tp in tps:
                committed = offsets.get(tp)
                # A group without a commit starts at the earliest record
                # (auto_offset_reset="earliest"), so all of it is waiting.
                start = committed if committed is not None else begin[tp]
                row.partitions.append(PartitionLag(tp.partition, committed, highs[tp],
                                                   max(0, highs[tp] - start)))
            row.lag = sum(p.lag for p in row.partitions)
    view.dead_letters = letters.newest(dead_letters)
    await _mark_redrives(cfg, topics, letters.marks, view, redrives)
    view.products = _decoded(records.get(topics.name("products"), []), "product", view,
                             products)
    if topics.name("holds") not in view.missing_topics:
        # As `calstream holds list` shows them: the planner's ledger where
        # cfg.work_dir is the planner's, the topic's records beside it.
        # Timed: a silent work directory held the view for ever (holds_view.py).
        rows, view.holds_checked, unanswered = await believed_in_time(
            topic_holds, cfg.work_dir, ledger_reads)
        view.holds = held(rows)
        view.holds_note = unanswered or unchecked_note(rows.values(), cfg.work_dir)
    return view


# -- putting it together --------------------------------------------------

async def collect(cfg: Config, metrics_urls: list[str], *, dead_letters: int = 10,
                  products: int = 10, timeout: float = 15.0,
                  redrives: RedriveReading | None = None,
                  ledger_reads: FileReads | None = None) -> Status:
    """What `calstream status` and the console show; ``redrives``: the
    redrive marks read so far, and ``ledger_reads``: what times the planner's
    ledger's read (holds_view.ledger_reads), kept by a caller that collects
    again."""
    endpoints = [await anyio.to_thread.run_sync(read_endpoint, url, min(timeout, 5.0))
                 for url in metrics_urls]
    if cfg.kafka_bootstrap:
        try:
            with anyio.fail_after(timeout):
                broker = await read_broker(cfg, dead_letters=dead_letters, products=products,
                                           redrives=redrives, ledger_reads=ledger_reads)
        except TimeoutError:
            broker = BrokerView(cfg.kafka_bootstrap, error=f"no answer within {timeout:.0f}s")
        except Exception as exc:
            broker = BrokerView(cfg.kafka_bootstrap, error=error_text(exc))
    else:
        broker = BrokerView(None, error="no broker configured (--kafka-bootstrap, or "
                                        "kafka_bootstrap in the config file)")
    return Status(time.time(), cfg.topic_prefix, cfg.group_prefix, endpoints,
                  summarise_metrics(endpoints), broker, summarise_planner(endpoints),
                  summarise_parked(endpoints))
