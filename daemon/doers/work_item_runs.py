"""Runs of a work item cut short with their daemon, counted across its restarts.

A run that the kernel's OOM killer ends with its whole container (cgroup v2
kills a Kubernetes container whole: ``memory.oom.group``), or that ends with
a ``kill -9`` of the daemon or a lost machine, leaves no outcome: its record
is uncommitted, the restarted daemon fetches it again and runs it again, with
its attempts counted from zero. One whose memory grows faster than the pool
polls it (run_memory.py) took the container down that way at every restart,
for ever, and every other run with it. So each run that begins in a worker
leaves a mark beside its claim, ``<products>/.claims/<work id>.v<version>.runs``
(``{"began": N}``: N runs in a row began and never ended), removed once the
run ends in any way this process sees: an outcome, a lost worker, a graceful
stop (a cancelled run is not cut short). A mark found when the item's work
begins again counts its runs as lost workers (work_item_runner.py): one of
the item's ``max_attempts`` each, then a ``retries_exhausted`` dead letter,
never a run more. Only runs that held a worker are counted: the items that
waited behind them in a crashed daemon are not. Only the claim's holder
writes the mark; it is a hint, so a mark that cannot be read counts none
and one that cannot be written (a full store: the run parks on it anyway)
is passed over. Not synced: what the kernel kills leaves the page cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from pathlib import Path

from calstream.daemon.doers.durable_files import write_json_atomically
from calstream.daemon.doers.work_claims import WorkClaims
from calstream.steps.regular_files import read_regular_text

log = logging.getLogger("calstream.claims")

# A mark naming more runs than this is not one we wrote.
_MOST = 10_000


class CutShortRuns:
    """The run marks of one work item (``claims``: its store's claims)."""

    def __init__(self, claims: WorkClaims, work_id: str, version: int):
        claim = claims.path(work_id, version)
        self.path = claim.with_name(f"{claim.name}.runs")
        self.top = claims.top
        self.cut_short = 0  # as read() found them
        self._marking: list[threading.Thread] = []

    def read(self) -> int:
        """Runs of this work that began in a worker and never ended (in a
        thread): 0 for no mark, or one that cannot be read or is garbage."""
        try:
            began = json.loads(read_regular_text(self.path)).get("began")
        except (OSError, ValueError, RecursionError, AttributeError):
            began = 0
        ok = isinstance(began, int) and not isinstance(began, bool) and 0 <= began <= _MOST
        self.cut_short = began if ok else 0
        return self.cut_short

    def began(self) -> None:
        """A run began in a worker: marked in a thread of its own (called on
        the event loop, at the moment a worker is the run's: pool.run's
        ``started``); ``ended`` waits for it."""
        marking = threading.Thread(target=self._mark, name="run-mark", daemon=True)
        marking.start()
        self._marking.append(marking)

    @property
    def marking(self) -> bool:
        """A run began here and ``ended`` is owed (no thread trip without)."""
        return bool(self._marking)

    def ended(self) -> None:
        """The run began here ended (in a thread): its mark removed, and the
        count with it: a retry's mark counts from one (runs cut short *in a
        row*; the earlier daemons' runs were counted at this item's start)."""
        if not self._marking:
            return  # none began here: a mark left by an earlier daemon stays
        for marking in self._marking:
            marking.join()
        self._marking.clear()
        self.cut_short = 0
        self.forget()

    def forget(self) -> None:
        """The item is done with (its dead letter sent): no mark stays (in a
        thread), so a redrive of it runs."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def _mark(self) -> None:
        try:
            write_json_atomically(Path(self.path), {"began": self.cut_short + 1},
                                  what="run mark", root=self.top, sync=False)
        except OSError as exc:
            log.debug("cannot mark the run's start in %s: %s", self.path, exc)
