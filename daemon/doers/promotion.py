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
from pathlib import Path
from typing import Any

from calstream.daemon.doers.durable_files import fsync_dir
from calstream.daemon.doers.product_store import (
    CURRENT,
    LIVE,
    NAMESPACES,
    PROMOTIONS,
    ProductStore,
    check_namespace,
)
from calstream.daemon.operations.config import ConfigError
from calstream.steps.regular_files import open_new
from calstream.topics import contract


def _target(namespace: str) -> str:
    # Relative, so the store can be mounted elsewhere (shared storage) and still resolve.
    return "." if namespace == LIVE else f"{NAMESPACES}/{namespace}"


def _swap_link(top: Path, target: str) -> None:
    tmp = top / f".{CURRENT}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, top / CURRENT)
    fsync_dir(top)


def ensure_current(store: ProductStore) -> None:
    """A store without a ``current`` link serves the live tree: say so explicitly."""
    top = store.top
    top.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(top / CURRENT):
        _swap_link(top, _target(LIVE))


def current_namespace(store: ProductStore) -> str:
    try:
        target = os.readlink(store.top / CURRENT)
    except FileNotFoundError:
        return LIVE
    parts = Path(target).parts
    if len(parts) == 2 and parts[0] == NAMESPACES:
        return parts[1]
    return LIVE


def namespace_summary(store: ProductStore, namespace: str) -> dict[str, Any]:
    """What a namespace holds: its work items, and the replays and contexts that made them."""
    tree = store.for_namespace(namespace)
    records = tree.records() if tree.root.is_dir() else []
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


def promote(store: ProductStore, namespace: str, *, reason: str | None = None,
            by: str | None = None) -> contract.Message:
    """Switch ``current`` to ``namespace``; returns the promotion message (not yet sent)."""
    check_namespace(namespace)
    summary = namespace_summary(store, namespace)
    if namespace != LIVE and not summary["records"]:
        raise ConfigError(f"namespace {namespace!r} has no products in {summary['tree']}: "
                          "nothing to promote")
    previous = current_namespace(store)
    promoted_at = contract.utc_now()
    _swap_link(store.top, _target(namespace))
    message = contract.build(
        "promotion", contract.event_id("promotion", namespace, previous, promoted_at),
        namespace=namespace, previous=previous, current_link=str(store.top / CURRENT),
        promoted_at=promoted_at, reason=reason, by=by, **summary)
    record_dir = store.top / PROMOTIONS
    record_dir.mkdir(parents=True, exist_ok=True)
    stamp = promoted_at.replace(":", "").replace("-", "")
    tmp = record_dir / f".{stamp}-{namespace}.json.tmp"
    with open_new(tmp) as f:
        f.write(json.dumps(message.body, indent=1, sort_keys=True))
    os.replace(tmp, record_dir / f"{stamp}-{namespace}.json")
    return message
