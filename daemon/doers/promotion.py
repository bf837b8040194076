"""Switching the products of record to a namespace, atomically (`calstream promote`).

Readers find the products of record through one symlink, ``<products>/current``
(``.`` for the live tree, ``namespaces/N`` for namespace N). Promotion makes a
new link beside it and renames it over the old one: rename(2) replaces a
directory entry atomically, so a reader that resolves ``current`` sees the old
tree or the new one, never a mixture and never nothing. Nothing is copied or
moved, so promotion is instant whatever the size of the namespace, and
promoting the previous namespace again undoes it.

After the switch (never before: a subscriber reacting to the event must find
the link already switched) a record is written to ``<products>/promotions/``
and a ``promotion`` event is published on the ``promotions`` topic.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.promotion_coverage import CoverageGap, coverage_gap
from calstream.daemon.doers.durable_files import fsync_dir
from calstream.daemon.doers.product_store import (
    CURRENT,
    LIVE,
    NAMESPACES,
    PROMOTIONS,
    BadNamespace,
    OutsideRoot,
    ProductStore,
    check_namespace,
)
from calstream.daemon.operations.config import ConfigError
from calstream.steps.regular_files import kind_of, open_new
from calstream.topics import contract


class PromotionRefused(Exception):
    """The product store refused a promotion's writes: nothing was switched."""


class PartialPromotion(Exception):
    """The namespace lacks products live has; promoting it would withdraw
    them from the products of record. Nothing was switched."""

    def __init__(self, namespace: str, gap: CoverageGap):
        super().__init__(f"namespace {namespace!r} covers less than live"
                         if gap.exposures or gap.products else
                         f"namespace {namespace!r} holds products whose files changed")
        self.namespace, self.gap = namespace, gap


def _target(namespace: str) -> str:
    # Relative, so the store can be mounted elsewhere (shared storage) and still resolve.
    return "." if namespace == LIVE else f"{NAMESPACES}/{namespace}"


def _swap_link(top: Path, target: str) -> None:
    tmp = top / f".{CURRENT}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    try:
        os.replace(tmp, top / CURRENT)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(top)


def ensure_current(store: ProductStore) -> None:
    """A store without a ``current`` link serves the live tree: say so explicitly."""
    top = store.top
    top.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(top / CURRENT):
        _swap_link(top, _target(LIVE))


def current_namespace(store: ProductStore) -> str | None:
    """The namespace ``<products>/current`` names: LIVE when there is none (a
    store never promoted serves the live tree); None when it is not a link
    promote makes. It is a file like any other: a directory there (a copy of
    the store that followed links) raised EINVAL out of every console page,
    and a link made elsewhere by hand was reported as the live tree."""
    try:
        target = os.readlink(store.top / CURRENT)
    except FileNotFoundError:
        return LIVE
    except (OSError, ValueError):  # EINVAL: no link
        return None
    if target == _target(LIVE):
        return LIVE
    parts = Path(target).parts
    if len(parts) == 2 and parts[0] == NAMESPACES and target == _target(parts[1]):
        try:
            return check_namespace(parts[1], allow_live=False)
        except BadNamespace:
            return None
    return None


def not_the_link(store: ProductStore) -> str:
    """What is at ``<products>/current`` when it is not a link promote makes."""
    path = store.top / CURRENT
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    if stat.S_ISLNK(mode):
        return f"{path} is a link to {os.readlink(path)!r}, not the link promote makes"
    return f"{path} is {kind_of(mode)}, not the link promote makes"


def _records(store: ProductStore, namespace: str) -> list[dict[str, Any]]:
    tree = store.for_namespace(namespace)
    return tree.records() if tree.root.is_dir() else []


def namespace_summary(store: ProductStore, namespace: str,
                      records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a namespace holds: its work items, and the replays and contexts that made them."""
    tree = store.for_namespace(namespace)
    records = _records(store, namespace) if records is None else records
    replays: dict[str, dict] = {}
    contexts = set()
    for r in records:
        event = r.get("event", {})
        if event.get("crds_context"):
            contexts.add(event["crds_context"])
        replay = event.get("replay")
        if replay and replay.get("replay_id"):
            replays[replay["replay_id"]] = {k: replay.get(k) for k in
                                            ("replay_id", "from", "crds_context", "selection",
                                             "requested_at")}
    return {"tree": str(tree.root), "records": len(records), "replays": list(replays.values()),
            "crds_contexts": sorted(contexts)}


def _intact(tree: ProductStore, records: list[dict[str, Any]]
            ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """(The records whose files are the ones they list, (record, why) of the
    others). Every output is hashed: a record says what its files were when
    it was written, and a file changed or replaced since is no product, which
    readers of ``current`` would no longer find."""
    intact, damaged = [], []
    for record in records:
        try:
            problem = tree.outputs_problem(record)
        except OSError as exc:  # unreadable (permissions, a disk error): not known good
            problem = f"its files cannot be read ({exc})"
        if problem:
            damaged.append((record, problem))
        else:
            intact.append(record)
    return intact, damaged


def promote(store: ProductStore, namespace: str, *, reason: str | None = None,
            by: str | None = None, allow_partial: bool = False) -> contract.Message:
    """Switch ``current`` to ``namespace``; returns the promotion message (not yet sent).

    A namespace that lacks products live has is refused (PartialPromotion)
    unless ``allow_partial``: after the switch, readers would no longer
    find them."""
    check_namespace(namespace)
    records = _records(store, namespace)
    summary = namespace_summary(store, namespace, records)
    if namespace != LIVE and not summary["records"]:
        raise ConfigError(f"namespace {namespace!r} has no products in {summary['tree']}: "
                          "nothing to promote")
    if namespace != LIVE and not allow_partial:
        gap = coverage_gap(_records(store, LIVE), *_intact(store.for_namespace(namespace),
                                                            records))
        if gap:
            raise PartialPromotion(namespace, gap)
    previous = current_namespace(store)
    if previous is None:
        # Renaming a link over it would fail (a directory) or replace what a
        # person made: they say which products are of record.
        raise ConfigError(f"{not_the_link(store)}: look at it and move it away, then promote "
                          "again")
    promoted_at = contract.utc_now()
    message = contract.build(
        "promotion", contract.event_id("promotion", namespace, previous, promoted_at),
        namespace=namespace, previous=previous, current_link=str(store.top / CURRENT),
        promoted_at=promoted_at, reason=reason, by=by, **summary)
    record_dir = store.top / PROMOTIONS
    stamp = promoted_at.replace(":", "").replace("-", "")
    tmp = record_dir / f".{stamp}-{namespace}.json.tmp"
    try:
        # No link below the top on its way: one at `promotions` (anyone's
        # who can write the store) took the record wherever it pointed.
        store.inside(tmp)
    except OutsideRoot as exc:
        raise PromotionRefused(f"{exc}: nothing was switched, `current` still serves "
                               f"{previous}; look at it and move it away, then `calstream "
                               f"promote {namespace}` again") from None
    # The record is written before the switch: a store that refuses it
    # (full, read-only) switched `current` and then ended in a traceback,
    # the link changed, no record, no event, an empty temporary left.
    try:
        record_dir.mkdir(parents=True, exist_ok=True)
        with open_new(tmp) as f:
            f.write(json.dumps(message.body, indent=1, sort_keys=True))
        _swap_link(store.top, _target(namespace))
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PromotionRefused(
            f"the product store {store.top} refuses the promotion ({exc.strerror or exc}): "
            f"nothing was switched, `current` still serves {previous}; free space on it or "
            f"remount it writable, then `calstream promote {namespace}` again") from None
    os.replace(tmp, record_dir / f"{stamp}-{namespace}.json")
    return message
