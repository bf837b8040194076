"""A namespace's context record: ``<products>/namespaces/<ns>/crds_context.json``.

The rule is deciders/replay_namespace.py's: the first replayed item a stage
admits into a namespace fixes its CRDS context, later ones must ask for the
same. The record is created once, whole, by one creator (a complete
temporary file linked to the name: a second creator's link fails and it
reads the first's), so two daemons admitting the first items of two
replays at once cannot both fix it. A namespace made before records were
kept gets the one context its products carry (read once, as the first
later item is admitted); one whose products already mix contexts gets none
and takes no more replayed items. The name is no program's (five digits):
nothing of the store's layout reads it.

A record that cannot be written (a full or read-only store) holds the item
back: ``ContextRecordUnwritten`` is raised out of the admission, and the
stage's consumer keeps the record, parked on the disk's fault, and tries it
again until the record is down (session 45). The item was admitted all the
same before: until the store had room, each first item of another replay
into the namespace was admitted with its own context, and the namespace
held products of two.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.replay_namespace import (
    context_problem,
    context_record,
    mixed_problem,
    record_from_products,
)
from calstream.daemon.doers.durable_files import fsync_dir, temporary_path
from calstream.daemon.doers.product_store import OutsideRoot, ProductStore
from calstream.steps.regular_files import directory_in_place, open_new, read_regular_text
from calstream.topics import contract

CONTEXT_RECORD = "crds_context.json"


class ContextRecordUnwritten(Exception):
    """A namespace's context record could not be written: the store's fault
    (raised from the OSError, which names it), not the record's; the item
    must wait for it, not run nor be dead-lettered."""

    def __init__(self, namespace: str, cause: OSError):
        super().__init__(f"namespace {namespace}: its CRDS context record could not be "
                         f"written ({cause.strerror or cause}): no replayed item runs in it "
                         "until it is")

_RECORD_LIMIT = 64 << 10  # a few hundred bytes are written


def record_path(store: ProductStore, namespace: str) -> Path:
    return store.for_namespace(namespace).root / CONTEXT_RECORD


def read_record(store: ProductStore, namespace: str) -> Any:
    """The namespace's context record as read (any JSON, untrusted), or None
    if it has none. Garbage there is returned as the text it is, which
    names no context (the decider refuses on it)."""
    try:
        text = read_regular_text(record_path(store, namespace), limit=_RECORD_LIMIT)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a FIFO, a directory, too large, not UTF-8
        return f"unreadable: {exc}"
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text[:200]


def product_contexts(store: ProductStore, namespace: str) -> set[str]:
    """The CRDS contexts the namespace's products were made with."""
    tree = store.for_namespace(namespace)
    if not tree.root.is_dir():
        return set()
    return {str(r["event"]["crds_context"]) for r in tree.each_record()
            if r.get("event", {}).get("crds_context")}


def namespace_problem(store: ProductStore, namespace: str, asked: str,
                      replay: dict[str, Any]) -> str | None:
    """Why a replayed item of context ``asked`` may not run in ``namespace``
    (None: it may; the namespace's context is fixed to ``asked`` if it had
    none). A record that cannot be written (a full store) raises
    ``ContextRecordUnwritten``: nothing runs in a namespace whose context
    is not recorded (another replay's first item would fix another).
    A namespace whose tree passes through a link (made elsewhere) is
    refused before anything is read or written there: its record went
    where the link led."""
    try:
        store.for_namespace(namespace).inside(record_path(store, namespace))
    except OutsideRoot as exc:
        return str(exc)
    record = read_record(store, namespace)
    if record is None:
        contexts = product_contexts(store, namespace)
        problem = mixed_problem(namespace, contexts)
        if problem:
            return problem
        record = record_from_products(contexts, namespace) or context_record(
            asked, replay, contract.utc_now())
        try:
            record = _create(store, namespace, record)
        except OSError as exc:
            raise ContextRecordUnwritten(namespace, exc) from exc
    return context_problem(namespace, asked, record)


def _create(store: ProductStore, namespace: str, record: dict[str, Any]) -> Any:
    """``record`` as the namespace's, unless another was created first:
    then that one (as read)."""
    path = record_path(store, namespace)
    directory_in_place(path.parent, root=store.top, what="a namespace's tree")
    tmp = temporary_path(path)
    try:
        with open_new(tmp) as f:
            json.dump(record, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # whole, and only if there is none
        except FileExistsError:
            return read_record(store, namespace)
        fsync_dir(path.parent)
        return record
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
