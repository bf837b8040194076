"""`calstream replay`: reprocess a selection into a namespace, at low priority.

A replay reads a source topic from its oldest retained record up to "now"
(the high watermarks of fetch responses: end_offsets and offsets_for_times
are wrong on tansu), selects messages by arrival time and by what they are,
and republishes them where the workers read them at low priority:

* ``--from raw``: the arrivals of ``raw`` -> ``replay`` (detector1, then the
  later stages through the planner);
* ``--from stage2`` / ``--from stage3``: the live work orders of
  ``work.stage2`` / ``work.stage3`` -> ``work.stage2.replay`` /
  ``work.stage3.replay``, i.e. a later stage re-run from the existing
  earlier-stage live products.

Every republished message carries a ``replay`` object (replay id, namespace,
CRDS context, selection, the source record), which the products carry on.

Retention bounds a replay. If a partition has lost records to retention
(its first retained offset is above 0) and the requested range starts before
its first retained record, the replay would silently start later than asked:
that is reported as a gap, loudly, and nothing is published unless the
operator says ``--allow-gap``.

The product store is the ledger behind the topics (deciders/replay_from_store.py):
an exposure with a live detector1 product but no arrival on ``raw`` (a
broker that started again empty, a topic recreated, retention) is replayed
from the arrival its provenance record holds; live stage-2 or stage-3
products whose work order the topic lacks cannot be, and are a gap.

The selection and coverage logic is pure (no broker):
``daemon/deciders/replay_selection.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.deciders.admission import is_context_name
from calstream.daemon.deciders.replay_from_store import (
    ARRIVAL_STAGES,
    lost_orders,
    store_arrivals,
)
from calstream.daemon.deciders.replay_namespace import (
    context_problem,
    mixed_problem,
    record_from_products,
)
from calstream.daemon.deciders.replay_packed import publishable, unpacked
from calstream.daemon.deciders.replay_selection import (
    SOURCES,
    Candidate,
    Selection,
    coverage,
    facts_of,
    from_their_roots,
    record_time_text,
    replay_id,
    replayed_message,
    retention_gaps,
)
from calstream.daemon.deciders.replay_sieve import ScanSieve
from calstream.daemon.deciders.store_move import rerooted_order, rerooter
from calstream.daemon.doers.message_sender import send_messages
from calstream.daemon.doers.namespace_context import product_contexts, read_record
from calstream.daemon.doers.product_store import ProductStore, check_namespace
from calstream.daemon.doers.replay_source import arrival_judge, scan
from calstream.daemon.operations.config import Config, ConfigError
from calstream.daemon.operations.logs import escape_controls
from calstream.steps.crds_env import unavailable_context
from calstream.topics import contract
from calstream.topics.catalog import Topics


async def run_replay(cfg: Config, *, source: str, selection: Selection, namespace: str,
                     crds_context: str | None, dry_run: bool = False, allow_gap: bool = False,
                     by: str | None = None,
                     on_published: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Select, check retention, and (unless dry-run or a refused gap) publish.
    Returns the report. ``on_published(key)`` as each item is acknowledged;
    stopped while it publishes (Ctrl-C, the broker lost), it says on stderr
    what went before the stop is raised on."""
    check_namespace(namespace, allow_live=False)
    if crds_context is not None and not is_context_name(crds_context):
        raise ConfigError(f"--crds-context {crds_context!r} is not a context name "
                          "(e.g. jwst_1535.pmap)")
    # Asked of this command's CRDS settings, which are the deployment's when
    # run beside it (crds.env); the daemons check again as they admit each item.
    missing = unavailable_context(crds_context) if crds_context is not None else None
    if missing:
        raise ConfigError(f"--crds-context: {missing}")
    store = ProductStore(cfg.products, moved_from=cfg.products_moved_from)
    if crds_context is not None:
        # Refused here, before anything is published, when the namespace
        # says its context already; the stages judge every item again
        # (and a replay that names none, by the context it runs with).
        refusal = _namespace_refusal(store, namespace, crds_context)
        if refusal:
            raise ConfigError(refusal)
    topics = Topics(cfg.topic_prefix)
    src_logical, dst_logical, kind = SOURCES[source]
    src, dst = topics.name(src_logical), topics.name(dst_logical)
    inbox_roots, roots_from = _inbox_roots(cfg)
    roots = {"inbox_roots": inbox_roots, "products_root": str(cfg.products)}
    # Each record judged as it is read, only what the selection takes kept
    # (a topic's every record, decoded, was 412 MiB at 100,000 arrivals).
    # Live, with links followed: outside the store (None) is no live product.
    # No file a record names is read without the inbox roots (any record
    # may name any file the operator can read): the later record is taken.
    sieve = await scan(cfg, src, ScanSieve(
        kind, selection, roots, prepare=_moved_one(cfg),
        live_input=lambda path: store.namespace_of(Path(path)) == "live",
        judge=arrival_judge(inbox_roots) if inbox_roots is not None else None))
    scans, outside = list(sieve.scans.values()), sieve.outside
    gaps = retention_gaps(scans, selection.since)
    restored, unusable = await _from_store(store, source, sieve, selection, src, gaps)
    chosen, matched, superseded = sieve.chooser.result()
    restored = _moved(cfg, restored)
    restored, outside_store = from_their_roots(restored, **roots)
    requested_at = contract.utc_now()
    rid = replay_id(source, selection, namespace, crds_context, requested_at)
    request = {"replay_id": rid, "from": source, "namespace": namespace,
               "crds_context": crds_context, "requested_at": requested_at,
               "selection": selection.describe()}
    if by:
        request["by"] = by

    def build(c: Candidate) -> tuple[str, Any]:
        return replayed_message(c, source=source, topic=src, request=request)
    # Built as each is sent, not all first (1.5 KB each: replay_packed.py).
    fits, too_large = publishable([*chosen, *restored], build)
    chosen = [c for c in fits if c.origin is None]
    restored = [c for c in fits if c.origin is not None]
    refused = bool(gaps) and not allow_gap
    published = 0
    if fits and not dry_run and not refused:
        went: list[Any] = [0, None]  # how many, the last: not every name (millions)

        def published_one(key: str) -> None:
            went[:] = [went[0] + 1, key]
            if on_published is not None:
                on_published(key)
        try:
            published = await send_messages(cfg, dst, map(build, fits), on_sent=published_one)
        except BaseException:
            print(stopped_note(rid, dst, *went, len(fits)), file=sys.stderr, flush=True)
            raise
    return {
        **request, "source_topic": src, "target_topic": dst, "dry_run": dry_run,
        "scanned": sieve.scanned, "invalid_skipped": sieve.invalid, "matched": matched,
        "superseded": superseded, "selected": len(chosen) + len(restored),
        "from_store": len(restored), "store_records_unusable": unusable + outside_store,
        "outside_roots": outside, "inbox_roots": inbox_roots, "inbox_roots_from": roots_from,
        # Exposures whose arrivals disagree, taken by time: no roots, no file read.
        "disagreeing_unread": len(sieve.unjudged),
        "too_large": len(too_large),
        "too_large_items": too_large[:20],
        "published": published, "refused": refused, "gaps": gaps,
        "partitions": [asdict(p) for p in coverage(scans, chosen)],
        "items": [{"name": facts_of(unpacked(c.message))[0], "partition": c.partition,
                   "offset": c.offset, "time": record_time_text(c.timestamp_ms)}
                  for c in chosen] + [
                  {"name": facts_of(unpacked(c.message))[0], "partition": None, "offset": None,
                   "time": record_time_text(c.timestamp_ms), "from": c.origin}
                  for c in restored],
    }


def _namespace_refusal(store: ProductStore, namespace: str, context: str) -> str | None:
    """Why ``namespace`` takes no replay of ``context``: it is another
    context's (its context record, or the products it already holds)."""
    record = read_record(store, namespace)
    if record is None:
        contexts = product_contexts(store, namespace)
        return mixed_problem(namespace, contexts) or context_problem(
            namespace, context, record_from_products(contexts, namespace))
    return context_problem(namespace, context, record)


def _inbox_roots(cfg: Config) -> tuple[list[str] | None, str]:
    """(The inbox roots a replayed arrival's file must lie under, None if
    this command does not know them; where they came from, for the report).
    The deployment record does not carry them: they are the deployment's if
    this command was told them, or its work dir, under which they are the
    default, and then the deployment's only if its configuration names no
    other inbox. The report says which: every genuine arrival of an inbox
    elsewhere was left out and the report blamed a forger."""
    told = {k: cfg.sources[k] for k in ("allowed_roots", "inbox") if k in cfg.sources}
    roots = [str(r) for r in cfg.allowed_roots]
    if told:
        return roots, ", ".join(f"{k} from {src}" for k, src in told.items())
    if "work_dir" in cfg.sources:
        return roots, (f"the default under work_dir ({cfg.sources['work_dir']}): the "
                       "deployment's only if its configuration names no other inbox; give "
                       "its --config, or --inbox, if it does")
    return None, ("not known to this command: an arrival's file name is judged, and a path "
                  "in the product store refused; give the deployment's --config for its roots")


def stopped_note(rid: str, topic: str, count: int, last: str | None, total: int) -> str:
    """What a replay stopped while it published says: it said nothing, and
    the operator could not tell whether the replay was whole, half or none.
    Running it again is safe: a replayed item already done counts
    ``duplicate`` and calibrates nothing (its work id is its inputs',
    context's and namespace's, not the replay's; tests/integration/test_replay.py)."""
    last = f" (the last: {last})" if last is not None else ""
    return escape_controls(
        f"calstream: replay {rid} stopped after {count} of {total} item(s) published to "
        f"{topic}{last}; the same command again is safe: it publishes them all again, and "
        "each item still runs once (one already done counts outcome \"duplicate\" and "
        "calibrates nothing)")


def _moved(cfg: Config, candidates: list[Candidate]) -> list[Candidate]:
    """``_moved_one`` of each."""
    moved = _moved_one(cfg)
    return [moved(c) for c in candidates]


def _moved_one(cfg: Config) -> Callable[[Candidate], Candidate]:
    """The store moved (store_move.py): orders' paths read under its root, so
    that the history is selected, and republished naming the files as they
    are now. An arrival's path is the inbox's: it never moved."""
    reroot = rerooter(map(str, cfg.products_moved_from), str(cfg.products))
    if reroot is None:
        return lambda c: c
    return lambda c: replace(c, message=rerooted_order(c.message, reroot)) \
        if c.message.get("schema") == "calstream.work_order" else c


async def _from_store(store: ProductStore, source: str, sieve: ScanSieve, selection: Selection,
                      topic: str, gaps: list[str]) -> tuple[list, int]:
    """What the product store adds where the topic lacks it: for ``raw``,
    the arrivals of live exposures with no live arrival on it (``on_topic``:
    their exposure ids; chosen by the selection), and how many records made
    none; and in place of an arrival chosen from the topic that its file
    denies, the record's if the file says it is its own (the topic lost the
    real one, a forged one is there: it kept the record's from being made,
    and the exposure was never replayed); for a later stage, the live
    products whose work order is missing (``on_topic``: the orders'
    ``made_from``), appended to ``gaps``."""
    on_topic = sieve.on_topic
    stages = sorted(ARRIVAL_STAGES) if source == "raw" else [source]

    def judged() -> tuple[list, Any]:
        # One record at a time, in a thread: a mission's, held, took some 8 KB each.
        events = (r["event"] for stage in stages for r in store.each_record(stage))
        if source == "raw":
            return store_arrivals(events, on_topic, selection, sieve.chooser.latest,
                                  sieve.chooser.prefer)
        return [], lost_orders(events, source, on_topic, selection)
    made, unusable_or_lost = await anyio.to_thread.run_sync(judged)
    if source == "raw":
        return made, unusable_or_lost
    lost = unusable_or_lost
    if lost:
        gaps.append(f"{len(lost)} live {source} product(s) have no work order on {topic} (the "
                    f"broker lost them: restarted empty, or the topic recreated), e.g. "
                    f"{', '.join(lost[:3])}: replay them --from raw")
    return [], 0
