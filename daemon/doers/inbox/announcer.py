"""Announcing an arrival: dedupe against the ledger, call the caller's
``on_arrival``, and only after it returns record (exposure id, digest), so a
failed announcement is retried and never lost."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from calstream.daemon.deciders import broker_refusals
from calstream.daemon.deciders.inbox_file import Sig
from calstream.daemon.doers.file_reads import STORE_HUNG, FileReads, ReadHung
from calstream.daemon.doers.inbox.ledger import Ledger
from calstream.daemon.doers.inbox.reports import Arrival, Counts, log_file
from calstream.topics import contract


class AnnouncementFailed(Exception):
    """``on_arrival`` raised (``__cause__``); the watcher retries later,
    unless ``refused``: the file's arrival message is refused by its own
    schema, a fact about the file (a header the door should have refused),
    so the watcher rejects the file instead of retrying it for good.
    ``cause``: the parked cause to retry under, when the fault's own
    exception names none."""

    def __init__(self, reason: str, *, refused: bool = False, cause: str | None = None):
        super().__init__(reason)
        self.refused, self.cause = refused, cause


@dataclass(eq=False)
class Announcer:
    ledger: Ledger
    on_arrival: Callable[[Arrival], Awaitable[None]]
    has_products: Callable[[str, str], bool]  # sync: run in a thread
    counts: Counts
    reads: FileReads  # the look-up is timed as the inbox's reads are
    # (exposure id, digest) being announced now, under whichever path.
    _in_flight: set[tuple[str, str]] = field(default_factory=set)

    async def announce(self, a: Arrival, sig: Sig) -> bool:
        """True once the arrival is dealt with (announced, a duplicate, or its
        products exist); False if the same content is being announced under
        another path right now (try again shortly). Raises AnnouncementFailed."""
        key = (a.exposure_id, a.digest)
        if key in self._in_flight:
            return False
        self._in_flight.add(key)
        try:
            await self._announce(a, sig)
            return True
        finally:
            self._in_flight.discard(key)

    async def _announce(self, a: Arrival, sig: Sig) -> None:
        if a.source == "startup-scan":
            if await self.products_exist(a.exposure_id, a.digest, a):
                await self.ledger.record(a, sig, announced=False)
                self.counts.recorded += 1
                log_file(logging.INFO, "products exist; recorded, not announced", a.path, a)
                return
            again = await self.ledger.has(a.exposure_id, a.digest)
            what = "re-announcing (announced before, no products yet)" if again else "announcing"
        elif await self.ledger.has(a.exposure_id, a.digest):
            self.counts.duplicates += 1
            log_file(logging.INFO, f"already announced ({a.digest}); skipped", a.path, a)
            return
        else:
            what = "announcing"
        log_file(logging.INFO, f"{what} ({a.digest}, {a.size} bytes)", a.path, a)
        try:
            await self.on_arrival(a)
        except contract.InvalidMessage as exc:
            self.counts.errors += 1
            if broker_refusals.record_refusal(exc.__cause__ or exc) is not None:
                # The broker refused a message the encoding took (within
                # calstream's own limit): the topic's settings (its
                # max.message.bytes, a policy), not the file. Quarantined,
                # a topic refusing every arrival moved every file aside, each
                # to be put back by hand; parked, each goes on by itself
                # once the topic takes it (session 44).
                raise AnnouncementFailed(f"the broker refuses its arrival message: {exc}",
                                         cause=broker_refusals.TOPIC_REFUSES_RECORD) from exc
            # The encoding's: the file's own header makes it (its schema, its size).
            raise AnnouncementFailed(f"its arrival message is refused: {exc}",
                                     refused=True) from exc
        except Exception as exc:
            self.counts.errors += 1
            raise AnnouncementFailed(repr(exc)) from exc
        self.counts.announced += 1
        try:
            # Shielded: a shutdown landing between the announcement and this
            # write would otherwise make the next start re-hash and
            # re-announce the file.
            with anyio.CancelScope(shield=True):
                await self.ledger.record(a, sig, announced=True)
        except Exception:
            # Announced all the same; a later duplicate is harmless since
            # event ids downstream are deterministic.
            self.counts.errors += 1
            log_file(
                logging.ERROR, "announced, but the ledger write failed", a.path, a, exc_info=True
            )

    async def products_exist(self, exposure_id: str, digest: str, a: Arrival | Path) -> bool:
        """``a``: the arrival, or the path, its log lines name. ReadHung
        (store_hung) when the product store does not answer in time: in
        anyio's threads, untimed, a start on a silent store held the threads
        the rest of the daemon shares, the start and any stop, unseen."""
        path = a if isinstance(a, Path) else a.path
        try:
            return bool(await self.reads.timed(
                lambda _: self.has_products(exposure_id, digest), path, self.reads.read_seconds,
                what="products' look-up", cause=STORE_HUNG))
        except ReadHung:
            raise  # its file is parked, and asked about again
        except Exception:
            # Announcing again is a redelivery with a deterministic event id:
            # cheaper than risking a file that never gets processed.
            self.counts.errors += 1
            path, arrival = (a, None) if isinstance(a, Path) else (a.path, a)
            log_file(
                logging.WARNING, "has_products failed; announcing anyway", path, arrival,
                exc_info=True
            )
            return False
