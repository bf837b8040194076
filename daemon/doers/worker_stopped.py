"""A run's worker stopped mid-run: seen, then ended after a grace.

Between two polls of a run (every 0.2 s, as the memory bound: run_memory.py)
the pool asks ``stopped_too_long``: /proc says whether the worker or a child
of its run is stopped (state ``T``: SIGSTOP, SIGTSTP) or the worker's cgroup
is frozen (cgroup v2's ``cgroup.events``, v1's freezer), and the run's CPU time.
deciders/work_stops.py judges: a stop seen for ``grace`` seconds without CPU
progress ends the worker (SIGKILL: a stopped process takes no other signal
before it is continued; its children die with it, PDEATHSIG), and its run is
retried in another worker as a lost worker's is. A worker that is only slow
(waiting: S, D; computing: R) is never ended here. A ptrace stop (state
``t``: a debugger, py-spy) is not judged a stop: someone is looking at it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.work_stops import judge_stop
from calstream.daemon.doers.run_memory import run_children

log = logging.getLogger("calstream.pool")

# How long a run may stay stopped before its worker is replaced: far above a
# profiler's or a debugger's brief stop, far below a task's time-out.
STOPPED_SECONDS = 60.0

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def run_state(pid: int, children: Iterable[int] = (), *,
              cgroup_root: Path = _CGROUP_ROOT) -> tuple[str | None, int]:
    """(how the run is stopped, or None; its CPU time in clock ticks): the
    worker ``pid`` and its run's ``children`` (run_memory.run_children). A
    process /proc cannot tell of (gone) is neither stopped nor counted."""
    how, cpu = None, 0
    for each in (pid, *children):
        state, ticks = _stat(each)
        cpu += ticks
        if state == "T" and how is None:
            # Not named: /proc does not say which stop signal (SIGSTOP, a
            # terminal's SIGTSTP, SIGTTOU, SIGTTIN).
            how = "stopped (state T: a stop signal)" if each == pid else \
                f"waiting for its child {each}, which is stopped (state T: a stop signal)"
    if how is None and (frozen := _frozen_cgroup(pid, cgroup_root)) is not None:
        how = f"frozen (its cgroup {frozen} is frozen)"
    return how, cpu


def stopped_too_long(process: Any, name: str, request: Any, grace: float) -> str | None:
    """Why worker ``name`` (``process``) was killed, if its run has been
    stopped ``grace`` seconds without CPU progress; None if it goes on. The
    stop seen is kept on ``request.stop`` from one poll to the next."""
    # Looked for here too: with no memory bound (worker_run_memory_mb: 0)
    # nothing else looks, and a stopped child of the run was never seen.
    how, cpu = run_state(process.pid, run_children(process, request))
    seen = request.stop
    request.stop, end = judge_stop(seen, how=how, cpu=cpu, now=time.monotonic(), grace=grace)
    # Said when a stop is first seen, or is of another kind: not again when
    # only its count began again (the run's children computed meanwhile), or
    # it was said at every 0.2 s look.
    if request.stop is not None and (seen is None or seen.how != request.stop.how):
        log.warning("worker %s is %s mid-run: it is killed, and its run tried again in "
                    "another worker, if it is still so in %.0fs", name, how, grace)
    elif seen is not None and request.stop is None:
        log.info("worker %s goes on again after %.0fs stopped", name,
                 time.monotonic() - seen.since)
    if not end:
        return None
    with contextlib.suppress(OSError, ValueError):
        process.kill()
    log.warning("worker %s was %s for %.0fs mid-run, its CPU time unchanged: killed",
                name, how, grace)
    return (f"worker {name} was {how} for {grace:.0f}s during the run, its CPU time "
            "unchanged, and was killed")


def _stat(pid: int) -> tuple[str | None, int]:
    """(state letter, user + system CPU ticks) of ``pid``; (None, 0) if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        return fields[0], int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None, 0


def _frozen_cgroup(pid: int, root: Path) -> str | None:
    """The cgroup of ``pid`` if it is frozen (v2: ``frozen 1`` in its
    ``cgroup.events``; v1: ``FROZEN`` in the freezer's ``freezer.state``),
    else None. A frozen cgroup holding this daemon too would hold this look
    as well: only a worker in a cgroup of its own (a runtime's, an
    operator's) is seen frozen."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, where = rest.partition(":")
        if not where.startswith("/") or ".." in where.split("/"):
            continue
        if (hierarchy, controllers) == ("0", ""):
            state, frozen = root / where.lstrip("/") / "cgroup.events", "frozen 1"
        elif "freezer" in controllers.split(","):
            state, frozen = root / "freezer" / where.lstrip("/") / "freezer.state", "FROZEN"
        else:
            continue
        try:
            if frozen in state.read_text().splitlines():
                return where
        except OSError:
            continue
    return None
