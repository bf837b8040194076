"""The product store's upkeep (a part of ``ProductStore``, product_store.py):
the inputs whose run was dead-lettered, remembered so that a start does not
announce them again, and the scratch directories crashed runs left behind.
Apart from the store's commits and records, which are its contract with
every reader; these are the daemon's own housekeeping."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.namespaces import LIVE, NAMESPACES
from calstream.daemon.doers.child_processes import pid_alive
from calstream.daemon.doers.durable_files import write_json_atomically
from calstream.steps.regular_files import read_regular_text

SCRATCH_DIR = ".tmp"  # a run's private scratch directory, beside where its products go
OWNER_FILE = ".owner"  # in a scratch directory: the host and pid of the run writing it
_FAILED = ".failed"  # inputs whose run was dead-lettered: not announced again at a start


class StoreUpkeep:
    """Mixed into ProductStore: uses its ``root``, ``top``, ``namespace``,
    ``namespaces()``, ``directory()`` and ``inside()``."""

    def record_failure(self, program: str, observation: str, *, name: str, stage: str,
                       digest: str, reason: str) -> None:
        """Remember that ``name``'s input with ``digest`` was dead-lettered, so
        a start-up scan does not announce the same file again (and dead-letter
        it again) at every restart. New content has another digest;
        `calstream deadletters redrive` re-sends the record itself."""
        path = self.inside(self.directory(program, observation) / _FAILED / f"{name}.{stage}.json")
        failed = _read_json(path) if path.exists() else {}
        failed[digest] = reason[:500]
        write_json_atomically(path, failed)

    def has_failed(self, program: str, observation: str, name: str, stage: str,
                   digest: str) -> bool:
        path = self.directory(program, observation) / _FAILED / f"{name}.{stage}.json"
        try:
            return digest in _read_json(path)
        except (OSError, ValueError):
            return False

    def clean_scratch(self, older_than: float = 6 * 3600) -> int:
        """Remove temporary directories left by crashed runs.

        Ours (this host, a pid that is gone) at once; others only when old, since
        another daemon on shared storage may still be writing into them.
        """
        removed = 0
        host = socket.gethostname()
        trees = [self.root] + [self.top / NAMESPACES / n for n in self.namespaces()] \
            if self.namespace == LIVE else [self.root]
        for tmp in (t for tree in trees
                    for t in [*tree.glob(f"*/*/{SCRATCH_DIR}/*"), *tree.glob(f"*/*/v*/{SCRATCH_DIR}/*")]):
            try:
                owner = json.loads(read_regular_text(tmp / OWNER_FILE))
                dead_here = owner["host"] == host and not pid_alive(int(owner["pid"]))
            # An owner file is untrusted like any file: whatever it says that
            # is not a pid on this host leaves the directory to the age rule.
            except (OSError, ValueError, KeyError, TypeError, OverflowError):
                dead_here = False
            if dead_here or time.time() - tmp.stat().st_mtime > older_than:
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        return removed


def _read_json(path: Path) -> dict[str, Any]:
    try:  # not a regular file, not UTF-8, not JSON, nested too deep: none
        value = json.loads(read_regular_text(path))
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
