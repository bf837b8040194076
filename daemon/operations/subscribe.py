"""``calstream subscribe``: an example downstream subscriber of the products topic.

This is meant to be copied. It shows what every subscriber must do to follow
the contract (docs/contract.md, "Semantics for subscribers"):

* **validate** every event against the published schema, and report an
  invalid one instead of crashing on it (one bad record must not stop an
  archive ingest);
* **deduplicate on event_id**: delivery is at-least-once, so the same event
  can come again after a redelivery, a restart or a reprocessing; the same
  id with other content (``emitted_at``, ``producer`` and ``previews`` aside)
  is no repetition but a forgery or a bug: report it, never take it as seen;
* **commit only after handling** (with ``--group``): a crash then means
  "seen again" (harmless, see above), never "lost"; a commit the group
  refuses (it rebalanced, or its broker started again and forgot it) is
  said and read past: those records come again;
* **read only announced files**: calstream sends an event after the
  provenance record that commits its outputs, but anyone who may write the
  topic can send one naming any path: before opening a file an event
  names, check it (``ProductStore(root).announced(path)``; docs/contract.md,
  "Paths in an event are claims"). This example opens none;
* **say a broker outage once**: the client library logs every failed
  connection (some 700 lines in 10 s); its lines are left out, and a probe
  of the broker's own says when it goes and when it is back, one line each
  (the daemon's way: deciders/broker_health.py). The client reconnects by
  itself meanwhile;
* **filter on the payload**, never on broker offsets by time:
  ``offsets_for_times`` is wrong on some brokers (tansu returns 0), so
  ``--since`` reads and drops older events.

Deduplication here lasts for one run, and remembers the most recent
``REMEMBERED`` event ids (a run of months, or a flood of forged ids, would
otherwise grow its memory without end; an id older than that is delivered
again, which at-least-once allows). A subscriber that must not repeat work
across restarts keeps what it did: ``--write-dir`` does, since the file
``<event_id>.json`` is the record that the event was handled.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.deciders.broker_health import BrokerHealth
from calstream.daemon.deciders.event_checks import EventIds, content_digest
from calstream.daemon.deciders.retry_policy import Backoff, jittered
from calstream.daemon.doers import kafka
from calstream.daemon.doers.broker_probe import answering
from calstream.daemon.doers.broker_supervisor import quiet_client_logs
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.logs import escape_controls
from calstream.steps.regular_files import read_regular_text
from calstream.topics import contract
from calstream.topics.catalog import Topics

REMEMBERED = 200_000  # event ids a run deduplicates on (some tens of MB)
# A --write-dir that cannot be written (gone, full, read-only) is tried again.
WRITE_RETRY = Backoff(first=1.0, cap=60.0)
# The broker asked this often while it answers; while it is lost, at
# jittered, growing intervals up to the cap: "back" is said within it.
PROBE_EVERY, PROBE_CAP = 1.0, 5.0


class WriteDirFault(Exception):
    """The --write-dir could not be written: its disk's fault, not the event's."""

    def __init__(self, directory: Path, cause: OSError):
        super().__init__(f"cannot write {directory}: {cause.strerror or cause}")


class Filters:
    """Which events to keep. Each option may be repeated: any of its values matches."""

    def __init__(self, args: argparse.Namespace):
        self.fields = {"program": args.program, "observation": args.observation,
                       "stage": args.stage, "pipeline": args.pipeline,
                       "exposure_id": args.exposure}
        self.namespaces = set(getattr(args, "namespace", None) or ())
        self.suffixes = set(args.suffix or ())
        self.since = _utc(contract.parse_time(args.since)) if args.since else None

    def match(self, event: dict[str, Any]) -> bool:
        for name, wanted in self.fields.items():
            if wanted and event.get(name) not in wanted:
                return False
        if self.namespaces and event.get("namespace", "live") not in self.namespaces:
            return False
        if self.suffixes and not self.suffixes & {o.get("suffix") for o in event["outputs"]}:
            return False
        # emitted_at is when this copy was sent: a re-emission of an old event
        # is "new" by this measure, which is what a "what came since" reader wants.
        return self.since is None or contract.parse_time(event["emitted_at"]) >= self.since


def _utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)  # a time without a zone is UTC


def text_line(event: dict[str, Any]) -> str:
    """One event, one line. A suffix is any text its schema allows: escaped,
    so a forged one (a newline, an escape sequence) cannot forge a line or
    repaint the terminal."""
    suffixes = ",".join(o.get("suffix", "?") for o in event["outputs"]) or "-"
    return escape_controls(
        f"{event['emitted_at']}  {event['stage']:9} {event['outcome']:7} "
        f"{event['program']}/{event['observation']}  {event['product_name']}  [{suffixes}]")


def write_event(directory: Path, event: dict[str, Any]) -> str:
    """Write ``<event_id>.json`` atomically: "written"; or, if it is there
    already, "duplicate" (the same content) or "conflicting" (other content
    under the id, or a file that is no event: left as it is).

    Atomic (a temporary file renamed into place) so that a reader watching the
    directory never sees half a file, even if this process dies mid-write.
    """
    final = directory / f"{event['event_id']}.json"
    if final.exists() or final.is_symlink():
        return "duplicate" if _written_content(final) == content_digest(event) else "conflicting"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incoming-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(event, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, final)
    except BaseException:
        os.unlink(tmp)
        raise
    return "written"


def _written_content(path: Path) -> bytes | None:
    """The content digest of an event this command wrote, None if the file is
    none (bounded, and never a FIFO or device: the directory is anyone's)."""
    try:
        return content_digest(json.loads(read_regular_text(path)))
    except (OSError, ValueError, RecursionError, TypeError):
        return None


class Subscriber:
    def __init__(self, cfg: Config, args: argparse.Namespace):
        self.cfg, self.args = cfg, args
        self.topic = Topics(cfg.topic_prefix).name("products")
        self.filters = Filters(args)
        # id -> content digest of the events handled in this run, the most recent
        self.seen = EventIds(capacity=REMEMBERED)
        self.counts = {"delivered": 0, "duplicate": 0, "filtered": 0, "invalid": 0,
                       "conflicting": 0, "commits_refused": 0, "broker_lost": 0}
        self.stopping = False  # set by --max or a signal; checked between records

    def handle(self, record) -> None:
        """One record: validate, deduplicate, filter, then print or write it."""
        try:
            event = contract.decode(record.value, expected="product").body
        except contract.InvalidMessage as exc:
            self.counts["invalid"] += 1
            print(f"subscribe: invalid record at {record.topic}[{record.partition}]@"
                  f"{record.offset}: {exc}", file=sys.stderr, flush=True)
            return
        if not self.filters.match(event):
            self.counts["filtered"] += 1
            return
        event_id, digest = event["event_id"], content_digest(event)
        known = self.seen.known(event_id)
        if known is not None:
            self._repeated(record, event_id, same=known == digest)
            return
        if self.args.write_dir:
            try:
                outcome = write_event(self.args.write_dir, event)
            except OSError as exc:
                raise WriteDirFault(self.args.write_dir, exc) from exc
            if outcome != "written":  # handled by an earlier run, or not this content
                if outcome == "duplicate":
                    self.seen.consistent_digest(event_id, digest)
                self._repeated(record, event_id, same=outcome == "duplicate")
                return
        elif self.args.format == "text":
            print(text_line(event), flush=True)
        else:
            print(json.dumps(event, separators=(",", ":"), sort_keys=True), flush=True)
        self.seen.consistent_digest(event_id, digest)
        self.counts["delivered"] += 1
        if self.args.max and self.counts["delivered"] >= self.args.max:
            self.stopping = True

    def _repeated(self, record, event_id: str, *, same: bool) -> None:
        if same:
            self.counts["duplicate"] += 1
            return
        # The first content stays the one delivered: which is true, a
        # subscriber cannot tell; it says so instead of dropping it unseen.
        self.counts["conflicting"] += 1
        print(f"subscribe: {record.topic}[{record.partition}]@{record.offset}: event_id "
              f"{event_id[:12]}... again with other content than the event of that id "
              "handled before (forged, or a producer's fault): not delivered",
              file=sys.stderr, flush=True)

    async def _handled(self, record) -> bool:
        """``handle(record)``, tried again while the write directory cannot be
        written; False if stopped meanwhile (the record neither handled nor
        committed). Its OSError ended the run with a traceback: the disk's
        fault is waited for, as the daemon waits for its own disks."""
        failures = 0
        while True:
            try:
                self.handle(record)
                return True
            except WriteDirFault as fault:
                failures += 1
                delay = jittered(WRITE_RETRY.delay(failures), random.random())
                print(f"subscribe: {fault}; trying {record.topic}[{record.partition}]@"
                      f"{record.offset} again in {delay:.0f} s (nothing after it is handled "
                      "or committed meanwhile)", file=sys.stderr, flush=True)
            until = time.monotonic() + delay
            while time.monotonic() < until:
                if self.stopping:
                    return False
                await anyio.sleep(min(0.2, until - time.monotonic()))

    def _commit_refused(self, why: str) -> None:
        # At-least-once: the records handled since the last commit come
        # again from the group's committed offsets (its start, for a broker
        # that forgot it) and are known by their event ids in this run.
        self.counts["commits_refused"] += 1
        print(f"subscribe: group {self.args.group}: the broker refused the commit ({why}): the "
              "group rebalanced, or the broker started again and forgot it; joining again, "
              "what was handled since the last commit comes again and is known by its "
              "event_id", file=sys.stderr, flush=True)

    async def run(self) -> None:
        """Read until stopped (``--max``, ``--until-idle``, a signal), the
        broker watched meanwhile and the client library's lines left out."""
        quiet_client_logs(True)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_broker)
                await self._read()
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the reading's own fault, as it was raised
            if len(group.exceptions) != 1:
                raise
            raise group.exceptions[0] from None
        finally:
            quiet_client_logs(False)

    async def _watch_broker(self) -> None:
        """One line when the broker stops answering, one when it is back. The
        client library said it with a line for every connection it tried,
        about 70 a second (its lines are left out for the run: ``run``)."""
        health = BrokerHealth(loss_bound=math.inf)  # no "still lost": one line each way
        bootstrap = self.cfg.kafka_bootstrap
        ssl_context = kafka.client_options(self.cfg).get("ssl_context")
        while True:
            await anyio.sleep(health.next_probe(PROBE_EVERY, PROBE_CAP))
            ok = await answering(bootstrap, answer_timeout=self.cfg.broker_timeout_seconds,
                                 ssl_context=ssl_context)
            now = time.monotonic()
            lost = health.lost_for(now)
            change = health.observe(ok, now)
            if change == "lost":
                self.counts["broker_lost"] += 1
                print(escape_controls(
                    f"subscribe: broker {bootstrap} lost: not answering; waiting for it "
                    "(nothing is read or committed meanwhile; the client's own lines are "
                    "left out)"), file=sys.stderr, flush=True)
            elif change == "back":
                print(escape_controls(
                    f"subscribe: broker {bootstrap} is back after {lost or 0:.0f} s; "
                    "reading on"), file=sys.stderr, flush=True)

    async def _read(self) -> None:
        group = self.args.group
        # Without a committed offset (a new group, or no group at all) it starts
        # at the oldest retained event; commits are ours, after handling.
        consumer = kafka.subscriber(self.cfg, self.topic, group)
        try:
            # Inside: a consumer whose broker never answered is stopped too
            # (it was left for the garbage collector's "Unclosed" lines).
            await consumer.start()
            idle_since = None
            while not self.stopping:
                batch = await consumer.getmany(timeout_ms=200)
                if not consumer.assignment():
                    continue  # still joining the group: not idle yet
                done = {}  # partition -> the offset to commit: one past the last handled
                for tp, records in batch.items():
                    for record in records:
                        if self.stopping or not await self._handled(record):
                            break
                        done[tp] = record.offset + 1
                if group and done:
                    refused = await kafka.commit_handled(consumer, done)
                    if refused is not None:
                        self._commit_refused(refused)
                if batch:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif self.args.until_idle is not None and \
                        time.monotonic() - idle_since >= self.args.until_idle:
                    break
        finally:
            await consumer.stop()  # leaves the group at once: no rebalance wait for others

    async def run_until_signal(self) -> None:
        async with anyio.create_task_group() as tg:
            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        self.stopping = True  # finish the record at hand, commit, leave
                        return

            tg.start_soon(on_signal)
            await self.run()
            tg.cancel_scope.cancel()


