"""The planner's own copy of what it keeps on compacted topics: plans and holds.

The broker is the transport; with the embedded default it keeps everything in
memory, so a restart loses the ``plans`` and ``holds`` topics. Product events
come back from the product store (runtime.py) and stage-3 versions with them
(``PlannerState.restore_product``); plans and holds have no product behind
them, so the planner writes each one here, atomically, when it first sees or
sends it, and at start re-publishes what the broker no longer has.

Layout: ``<work_dir>/planner/plans/<plan_id>.json`` (the plan message's body)
and ``<work_dir>/planner/holds/<exposure_id>.json`` (the last hold record of
the exposure, as compaction keeps it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from calstream.daemon.doers.durable_files import write_json_atomically
from calstream.steps.regular_files import read_regular_file
from calstream.topics import contract

log = logging.getLogger("calstream.planner")

_KINDS = {"plans": "plan_id", "holds": "exposure_id"}  # topic -> the key of its records


class PlannerLedger:
    def __init__(self, work_dir: Path):
        self.root = Path(work_dir) / "planner"

    def _path(self, topic: str, body: dict[str, Any]) -> Path:
        key = str(body[_KINDS[topic]])
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"cannot keep a {topic} record keyed {key!r}")
        return self.root / topic / f"{key}.json"

    def keep(self, topic: str, body: dict[str, Any]) -> None:
        """Record ``body`` (a plan: once; a hold: its latest state)."""
        path = self._path(topic, body)
        if topic == "plans" and path.exists():
            return  # a plan's content never changes: its id is its digest
        write_json_atomically(path, body)

    def kept(self, topic: str) -> list[dict[str, Any]]:
        """Every record kept for ``topic``, in a stable order."""
        out = []
        for path in sorted((self.root / topic).glob("*.json")):
            try:
                # Read as the message it was: no NaN or Infinity (re-published,
                # no reader would take it), no duplicate key, no nesting too deep.
                body = contract.parse_json(read_regular_file(path))
            except (OSError, contract.InvalidMessage) as exc:
                log.warning("unreadable planner record %s (%s): ignored", path, exc)
                continue
            # Its key is text (a list raised out of the start: ids are kept in sets).
            if isinstance(body, dict) and isinstance(body.get(_KINDS[topic]), str) \
                    and body[_KINDS[topic]]:
                out.append(body)
        return out
