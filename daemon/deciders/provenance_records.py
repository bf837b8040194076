"""Can a provenance record read back from the product store be used? (pure)

The store's records are calstream's own commit markers, but a file on disk is
untrusted like any input: one left by another version, edited by hand,
restored from a backup of another tree. Each is read at a run's start (is
this work done? then its event is re-emitted), at every planner start (the
stage-3 versions made), and by the readers' rule (``announced``). Before this
check, a record that was JSON but not the shape calstream writes (a list, an
event that is text, an output without a path) raised out of the stage
consumer's handler, which retries what raises as a broker or disk fault:
that record's work item was retried forever, and the planner could not start
past it. An output listed outside the store would have been read (and
hashed) wherever it pointed. Now such a record counts as absent: the work is
done again and its new record replaces this one.
"""

from __future__ import annotations

from typing import Any

from calstream.daemon.deciders.admission import path_text_problem
from calstream.daemon.deciders.event_checks import inside
from calstream.topics import contract


def record_problem(value: Any, store_root: str) -> str | None:
    """Why ``value`` (a record's parsed JSON) cannot be used; None if it can."""
    if type(value) is not dict:
        return f"a record must be a JSON object, not {type(value).__name__}"
    if type(value.get("work_id", "")) is not str:
        return "its work_id is not text"
    event = value.get("event")
    if type(event) is not dict:
        return "it holds no event object"
    if type(event.get("emitted_at", "")) is not str:
        return "its event's emitted_at is not text"
    for field, needs_digest in (("outputs", True), ("inputs", False)):
        files = event.get(field, [])
        if type(files) is not list:
            return f"its event's {field} are not a list"
        for f in files:
            if type(f) is not dict or type(f.get("path")) is not str \
                    or type(f.get("digest", "")) is not str \
                    or (needs_digest and "digest" not in f):
                return f"its event lists {field[:-1]} {str(f)[:200]!r} without a path and digest"
            size = f.get("size", 0)
            if type(size) is not int or size < 0:
                return f"its event gives {f['path'][:200]!r} a size of {str(size)[:40]!r}"
            if needs_digest and not inside(f["path"], [store_root]):
                return f"its event lists output {f['path'][:200]!r} outside the store"
            # An output is looked up (lstat, hashed): a lone surrogate or a NUL
            # in its path raised out of ``lookup`` instead of saying "not done".
            if needs_digest and (unusable := path_text_problem(f["path"])):
                return f"its event lists an output no file can have: {unusable}"
    return None


def done_problem(event: dict[str, Any], *, work_id: str, name: str, stage: str) -> str | None:
    """Why a usable record's event cannot stand for this work item as done
    (its event is re-emitted as the item's product event); None if it can.
    One that names other work, that its schema refuses or that is over what
    every reader takes, would be retried as a broker fault when re-emitted;
    the item is run again instead."""
    if (event.get("work_id"), event.get("product_name"), event.get("stage")) != \
            (work_id, name, stage):
        return (f"its event is {str(event.get('stage'))[:40]} of "
                f"{str(event.get('product_name'))[:200]!r}, work "
                f"{str(event.get('work_id'))[:12]}, not this item's")
    if not contract.is_valid("product", event):
        return "its event is not a product event the contract accepts"
    try:  # one committed before the commit checked it (an older calstream), or grown since
        contract.within_limit(contract.Message("product", event))
    except contract.InvalidMessage as exc:
        return f"its event cannot be sent: {exc}"
    return None
