"""The broker recovery's calls on the work directory and the product store
(broker_recovery.py), each timed by FileReads: on a silent mount the call
is left behind and ReadHung raised (work_dir_hung, store_hung), so the
start's step parks and the supervisor tries again later (session 45)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from calstream.daemon.doers.file_reads import STORE_HUNG, WORK_DIR_HUNG, FileReads
from calstream.daemon.doers.product_store import LIVE, ProductStore
from calstream.daemon.operations.config import Config
from calstream.topics.times import in_time_order

T = TypeVar("T")


class RecoveryReads:
    """The recovery's calls on the work directory and the product store,
    timed by ``reads`` (None: its own, for this one call)."""

    def __init__(self, cfg: Config, reads: FileReads | None) -> None:
        self.cfg, self.reads = cfg, reads or FileReads(1)

    async def on_work_dir(self, what: str, call: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await self.reads.timed(lambda _: call(*args, **kw), Path(self.cfg.work_dir),
                                      self.reads.read_seconds, what=what, cause=WORK_DIR_HUNG)

    async def ledger_read(self, what: str, read: Callable[..., T]) -> T:
        """``read(answered=...)`` of a ledger in the work directory (the
        dead letters, their redrives: KeyedLedger.kept), hung once no file
        has answered in its time: timed as a whole (one minute), 10,000
        letters on slow storage that works were called hung, and read again
        from the first, for ever."""
        return await self.reads.listing(lambda answered: read(answered=answered),
                                        Path(self.cfg.work_dir), what=what, cause=WORK_DIR_HUNG)

    async def records(self, store: ProductStore) -> list[dict]:
        """``every_record``, hung once no record has answered in its time."""
        return await self.reads.listing(partial(every_record, store), Path(self.cfg.products),
                                        what="products' read for the re-publishing",
                                        cause=STORE_HUNG)


def every_record(store: ProductStore, answered: Callable[[], None] | None = None) -> list[dict]:
    """The provenance records of the live tree and of every replay
    namespace's, oldest event first. A namespace's events are on the topic
    too: the planner plans its stage-2 and stage-3 work from them, and
    `calstream subscribe --namespace N` streams them; without them a
    replay's candidates lost their members with the broker's memory.
    Their events as published: after a store move, read under the new root
    they were other content under the same ids (docs/contract.md).
    ``answered()`` after each record read (ProductStore.records)."""
    live = store.for_namespace(LIVE)
    found = [*live.records(as_written=True, answered=answered),
             *(r for ns in live.namespaces()
               for r in live.for_namespace(ns).records(as_written=True, answered=answered))]
    return sorted(found, key=lambda r: in_time_order(r["event"].get("emitted_at")))
