"""Whether a task's answer can be published (pure).

A worker's answer is as untrusted as a record: a task of the wrong version,
a broken one or a hostile one may return anything. What the runner reads of
a success (work_item_outcomes.py) is checked here first, so a bad answer is
the run's fault -- a dead letter with the reason, nothing committed -- and
not an exception the stage consumer takes for the broker's or the disk's
and retries, running the item again, for as long as the daemon runs.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any


class BadResult(ValueError):
    """A task's answer that cannot be published: the run's own fault, the
    same at every attempt (``kind`` permanent), or its outputs gone since the
    run (its scratch directory removed under it: transient, run again)."""

    def __init__(self, problem: str, kind: str = "permanent") -> None:
        super().__init__(problem)
        self.kind = kind


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def result_problem(value: Any) -> str | None:
    """Why ``value``, a successful task's answer, cannot be published (None: it can).

    Its shape only; where its outputs lie is ``output_problem``'s to say."""
    if not isinstance(value, dict):
        return f"its result is a {type(value).__name__}, not a mapping"
    outputs = value.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(p, str) for p in outputs):
        return "its result's outputs are not a list of paths"
    if not isinstance(value.get("jwst_version"), str):
        return "its result names no jwst version"
    if value.get("crds_context") is not None and not isinstance(value["crds_context"], str):
        return "its result's crds_context is not a text"
    if not _number(value.get("duration_seconds")):
        return "its result's duration_seconds is not a number"
    if value.get("steps") is not None and not isinstance(value["steps"], dict):
        return "its result's steps are not a mapping"
    names = [PurePath(p).name for p in outputs]
    if len(set(names)) != len(names):
        return "its result lists two outputs of one name"
    sealed = value.get("sealed")
    if sealed is not None:
        if not isinstance(sealed, dict):
            return "its result's seals are not a mapping"
        for path, seal in sealed.items():  # an output without one is sealed again
            if not (isinstance(seal, (list, tuple)) and len(seal) == 2
                    and isinstance(seal[0], str) and isinstance(seal[1], int)):
                return f"its result's seal of {path} is not a digest and a size"
    return None


def output_problem(path: PurePath, scratch: PurePath) -> str | None:
    """Why an output at ``path`` (resolved) is not one of the run's files in
    ``scratch`` (resolved), which alone are moved into the store: a file
    elsewhere would be announced where it never was; a hidden one is not
    moved either."""
    if path.parent != scratch:
        return f"its output {path} lies outside its scratch directory {scratch}"
    if path.name.startswith("."):
        return f"its output {path} is a hidden file, which is never published"
    return None
