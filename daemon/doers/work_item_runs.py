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

Only a run that was likely the cause is blamed (session 45). A container's
end takes every run in it, and before, each of them was counted: after
``max_attempts`` such ends in a row, the runs that were only beside the
runaway one were dead-lettered with it. So a mark also says whether its run
was *alone* (``{"began": N, "alone": true}``): a suspect's run, which
``Solitude`` keeps the only one in this process's workers. Any other run
is marked with company, even one that began with none beside it: one may
begin beside it before its end. A run cut short with company is not
counted against its item; the item is a *suspect*, and its next run is
alone: the daemon's other runs wait for it (and it for them). A runaway so
takes the container down alone, and is counted; an innocent run ends, and
its mark goes. A mark without ``alone`` (an older daemon's) is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.doers.durable_files import write_json_atomically
from calstream.daemon.doers.work_claims import WorkClaims
from calstream.steps.regular_files import read_regular_text

log = logging.getLogger("calstream.claims")

# A mark naming more runs than this is not one we wrote.
_MOST = 10_000
# Suspects named in /readyz (Solitude.said), then counted; each name cut to
# NAME_CHARS (a stage-3 product's name is a record's text).
NAMED = 3
NAME_CHARS = 120


class CutShortRuns:
    """The run marks of one work item (``claims``: its store's claims)."""

    def __init__(self, claims: WorkClaims, work_id: str, version: int):
        claim = claims.path(work_id, version)
        self.path = claim.with_name(f"{claim.name}.runs")
        self.top = claims.top
        self.cut_short = 0  # runs blamed, as read() found them
        self.suspect = False  # a mark was found: its next run is alone
        self._marking: list[threading.Thread] = []

    def read(self) -> int:
        """Runs of this work that began in a worker, alone, and never ended,
        in a row (in a thread): 0 for no mark, one whose last run had company,
        or one that cannot be read or is garbage. ``suspect``: any mark."""
        try:
            mark = json.loads(read_regular_text(self.path))
            began, alone = mark.get("began"), mark.get("alone", True)
        except (OSError, ValueError, RecursionError, AttributeError):
            began, alone = 0, True
        ok = isinstance(began, int) and not isinstance(began, bool) and 0 <= began <= _MOST
        began = began if ok else 0
        self.suspect = began > 0
        # Runs before the last were alone: a suspect runs alone (Solitude).
        self.cut_short = began if alone is True else max(0, began - 1)
        return self.cut_short

    def began(self, alone: bool = False) -> None:
        """A run began in a worker (``alone``: the only one in this process's
        workers): marked in a thread of its own (called on the event loop, at
        the moment a worker is the run's: pool.run's ``started``); ``ended``
        waits for it."""
        marking = threading.Thread(target=self._mark, args=(alone,), name="run-mark",
                                   daemon=True)
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
        self.cut_short, self.suspect = 0, False
        self.forget()

    def forget(self) -> None:
        """The item is done with (its dead letter sent): no mark stays (in a
        thread), so a redrive of it runs."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)

    def _mark(self, alone: bool) -> None:
        try:
            write_json_atomically(Path(self.path), {"began": self.cut_short + 1, "alone": alone},
                                  what="run mark", root=self.top, sync=False)
        except OSError as exc:
            log.debug("cannot mark the run's start in %s: %s", self.path, exc)


class Solitude:
    """This process's runs in workers (across its pools): many together, or
    a suspect's alone. ``run(alone=False)`` waits while a suspect's run goes
    on or waits (it goes first: the runs in workers end, and none begins);
    ``run(alone=True)`` waits until no other run is held. Held from before
    a run asks for its worker until its end. A run that waits here is
    counted, while it waits, in ``metrics``' ``calstream_runs_waiting_alone``
    under its ``stage``: ``suspect`` or ``held_back`` (one behind a suspect).
    A suspect's run is named (``name``) in ``suspects`` from its wait until
    its end, for /readyz (``said``): the gauge counts, and an operator
    paged for a stalled stage needs to know which work holds it back."""

    def __init__(self) -> None:
        self.shared = 0  # runs held with company allowed
        self.alone = False  # a suspect's run is held
        self.waiting_alone = 0
        self._changed = anyio.Event()
        # (stage, name, running alone) of each suspect's run, oldest first.
        # Replaced whole, never changed in place: /readyz reads it from its
        # own thread.
        self.suspects: tuple[tuple[str, str, bool], ...] = ()

    def _change(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def said(self, most: int = NAMED) -> str | None:
        """The suspects' runs, for /readyz: ``most`` named (the one running
        alone first, then those waiting, oldest first), then how many more;
        None if there are none."""
        suspects = self.suspects  # one reference: read from another thread
        if not suspects:
            return None
        first = sorted(suspects, key=lambda suspect: not suspect[2])[:most]
        named = [f"{stage} {name[:NAME_CHARS]} ({'running alone' if running else 'waiting'})"
                 for stage, name, running in first]
        more = f", and {len(suspects) - most} more" if len(suspects) > most else ""
        return (f"suspects run alone, one at a time, the other runs waiting (each cut short "
                f"with the daemon beside other runs): {', '.join(named)}{more}")

    def _renamed(self, old: tuple[str, str, bool],
                 new: tuple[str, str, bool] | None) -> tuple[str, str, bool] | None:
        """``suspects`` with ``old`` replaced by ``new`` (None: removed); ``new``."""
        at = self.suspects.index(old)
        self.suspects = (*self.suspects[:at], *(() if new is None else (new,)),
                         *self.suspects[at + 1:])
        return new

    @contextlib.asynccontextmanager
    async def run(self, *, alone: bool, metrics: Any = None, stage: str = "",
                  name: str = "") -> AsyncIterator[None]:
        """``name``: the run's work (a suspect's is named in ``suspects``)."""
        if alone:
            self.waiting_alone += 1
            held = False
            named = (stage, name or "?", False)
            self.suspects += (named,)  # a new tuple: never changed in place
            try:
                with _waiting(metrics, stage, "suspect", self.alone or self.shared):
                    while self.alone or self.shared:
                        await self._changed.wait()
                self.alone = held = True
                named = self._renamed(named, (stage, name or "?", True))
            finally:
                self.waiting_alone -= 1
                if not held:  # cancelled while waiting: the others go on
                    self._renamed(named, None)
                    self._change()
        else:
            with _waiting(metrics, stage, "held_back", self.alone or self.waiting_alone):
                while self.alone or self.waiting_alone:
                    await self._changed.wait()
            self.shared += 1
        try:
            yield
        finally:
            if alone:
                self.alone = False
                self._renamed(named, None)
            else:
                self.shared -= 1
            self._change()


@contextlib.contextmanager
def _waiting(metrics: Any, stage: str, run: str, waits: bool) -> Iterator[None]:
    """Counted in ``calstream_runs_waiting_alone`` while it ``waits``: with
    many suspects after a crash, the stalled stage says why."""
    if metrics is None or not waits:
        yield
        return
    gauge = metrics.runs_waiting_alone.labels(stage=stage, run=run)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


# One per event loop: the daemon's one (its every pool), each test's own.
_SOLITUDES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def solitude() -> Solitude:
    """This process's Solitude (its running event loop's)."""
    loop = asyncio.get_running_loop()
    if (found := _SOLITUDES.get(loop)) is None:
        found = _SOLITUDES[loop] = Solitude()
    return found
