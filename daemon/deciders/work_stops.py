"""Whether a run's worker is stopped, not slow (pure).

A worker stopped mid-run (SIGSTOP: an operator's ``kill -STOP``, a
job-control signal; or its cgroup frozen) makes no progress and sends
nothing: before, its exposure and its turn at a worker were held until the
task time-out (an hour), while a dead worker is replaced at once. Only a stop
is judged here: a worker that waits (I/O, a lock, a slow network store:
state S or D) or computes (R) is slow, never stopped, however long it takes;
its time-out alone ends it.

A stop counts once it has lasted ``grace`` seconds, seen at every look in
between, the run's CPU time unchanged: a stop that is lifted meanwhile
(SIGCONT; a profiler's or debugger's brief stop) starts the count again.
The doer (doers/worker_stopped.py) reads /proc and ends the worker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stop:
    """A run seen stopped: since when (monotonic), its CPU time then (clock
    ticks, its worker's and its children's) and how (``RunState.how``)."""

    since: float
    cpu: int
    how: str


def judge_stop(seen: Stop | None, *, how: str | None, cpu: int, now: float,
               grace: float) -> tuple[Stop | None, bool]:
    """The stop to remember after this look, and whether the run is to be
    ended now. ``seen``: the stop remembered from the looks before (None:
    the run went on at the last); ``how``: what this look found stopped
    (None: nothing); ``cpu``: the run's CPU time now; ``grace`` <= 0: never
    ended for a stop."""
    if how is None:
        return None, False
    if seen is None or seen.how != how or seen.cpu != cpu:
        return Stop(now, cpu, how), False  # a new stop, or it went on meanwhile
    return seen, 0 < grace <= now - seen.since
