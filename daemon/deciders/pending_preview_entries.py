"""What a pending-previews entry may say (pure): the doer is
doers/pending_previews.py.

An entry lies in the shared product store, where other daemons and people
can write, and an adopting daemon draws from and writes next to the files it
names. So it is read as untrusted: a JSON object naming at most
``MAX_OUTPUTS`` absolute, normalised paths (the doer then checks that each
lies inside the store, links included) and a log context of short texts.
Anything else is refused with its reason, and the entry is dropped: a
preview is optional, and an entry that cannot be read will not become
readable by waiting.
"""

from __future__ import annotations

import os
import re
from typing import Any

from calstream.daemon.deciders.admission import path_text_problem

# A product of stage 3 may have a few dozen outputs; no true entry comes near this.
MAX_OUTPUTS = 256
MAX_TEXT = 400
LOG_KEYS = ("exposure_id", "stage", "work_id")
# An entry's name is its product event's id: a sha256 hex digest, nothing a
# message could make into a path.
_EVENT_ID = re.compile(r"[0-9a-f]{64}")


def entry_name(event_id: str) -> str:
    """The entry's file name; ValueError for an id that is not a digest."""
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise ValueError(f"event id {str(event_id)[:80]!r} is not a sha256 hex digest")
    return f"{event_id}.json"


def event_id_of(file_name: str) -> str | None:
    """The event id an entry's file name stands for, or None (a temporary
    file, or something else someone put there)."""
    stem, dot, ext = file_name.partition(".")
    return stem if ext == "json" and dot and _EVENT_ID.fullmatch(stem) else None


def read_entry(value: Any) -> tuple[list[str], dict[str, str | None]] | str:
    """(outputs, log context) of a parsed entry, or why it cannot be one."""
    if type(value) is not dict:
        return "not a JSON object"
    outputs, context = value.get("outputs"), value.get("log_context", {})
    if type(outputs) is not list or not outputs:
        return "no list of outputs"
    if len(outputs) > MAX_OUTPUTS:
        return f"{len(outputs)} outputs, more than {MAX_OUTPUTS}"
    for path in outputs:
        if type(path) is not str or not path:
            return f"output {str(path)[:80]!r} is not a path"
        if unusable := path_text_problem(path):  # a NUL, a surrogate, too long
            return f"output is not a path: {unusable}"
        if not os.path.isabs(path) or os.path.normpath(path) != path:
            return f"output {path[:200]!r} is not an absolute, normalised path"
    if type(context) is not dict:
        return "its log context is not an object"
    kept: dict[str, str | None] = {}
    for key in LOG_KEYS:
        text = context.get(key)
        if text is not None and (type(text) is not str or len(text) > MAX_TEXT):
            return f"its log context's {key} is not a short text"
        kept[key] = text
    return outputs, kept
