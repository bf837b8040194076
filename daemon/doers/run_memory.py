"""A run's memory while it goes: past its bound, its worker is killed at once.

Between two polls of a run (every 0.2 s) the pool asks ``over_bound``: a run
over its bound is killed now, before the kernel's OOM killer takes the
container (cgroup v2's group kill) and every run in it. SIGKILL at once, not
SIGTERM: what the run asks for next may be the last straw. Its children die
with it (its process group, killed with it: child_processes.kill_group; and
multiprocessing's by PDEATHSIG: children_die_with_me) and count whatever
cores it was given: an operator's step parameter ``maximum_cores`` starts
stcal's processes in a run of one core too (their memory escaped). A run
given several cores was given the part of idle workers too (core_sharing),
so its bound is that many times a run's (the caller multiplies).

Memory grown faster than the polls can still reach the kernel's OOM killer.
A worker found dead by SIGKILL while its cgroup's OOM kill count rose
(process_memory.oom_kills, read as the run is sent) is said to be the OOM
killer's (``died_words``): before, its loss read as any ``kill -9``'s.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from typing import Any

from calstream.daemon.doers.child_processes import kill_group
from calstream.daemon.doers.process_memory import children_of, oom_kills, resident_bytes

log = logging.getLogger("calstream.pool")

# How often a run's children are looked for (a scan of /proc: process_memory.
# children_of); their memory is read at every poll in between. A child
# started since is counted within this long.
CHILDREN_SCAN_SECONDS = 1.0


def over_bound(process: Any, name: str, bound: int, request: Any) -> str | None:
    """Why worker ``name`` (``process``) was killed, if its run (and its
    children, looked for at most every CHILDREN_SCAN_SECONDS and kept on
    ``request``) holds more than ``bound`` bytes; None if it does not."""
    used = resident_bytes(process.pid, children=run_children(process, request))
    if used <= bound:
        return None
    with contextlib.suppress(OSError, ValueError):
        process.kill()
    kill_group(process.pid)  # its children at once: their memory counted in the bound
    log.warning("worker %s held %d MiB during its run, more than a run may use "
                "(%d MiB, worker_run_memory_mb): killed", name, used >> 20, bound >> 20)
    return (f"worker {name} held {used >> 20} MiB during the run, more than a run may use "
            f"({bound >> 20} MiB, worker_run_memory_mb), and was killed")


def run_children(process: Any, request: Any) -> list[int]:
    """The children of the run's worker (``process``), looked for at most
    every CHILDREN_SCAN_SECONDS and kept on ``request`` (``children``,
    ``children_scanned_at``): for the memory bound and the stopped run's
    check alike (worker_stopped.py), whichever asks first at a poll."""
    now = time.monotonic()
    if now - request.children_scanned_at >= CHILDREN_SCAN_SECONDS:
        request.children = children_of(process.pid)
        request.children_scanned_at = now
    return request.children


def died_words(process: Any, name: str, oom_kills_before: int | None) -> str:
    """What worker ``name`` (``process``), found dead during its run, died
    of, as far as this host can tell (its exit code waited for a moment:
    the pipe may close before the process is reaped)."""
    with contextlib.suppress(OSError, ValueError, AssertionError):
        process.join(1.0)
    words = f"worker {name} died (exit code {process.exitcode}) during the task"
    after = oom_kills() if process.exitcode == -signal.SIGKILL else None
    if oom_kills_before is not None and after is not None and after > oom_kills_before:
        words += (", killed by the kernel's OOM killer (its cgroup's oom_kill count went from "
                  f"{oom_kills_before} to {after}): the run's memory grew faster than it is "
                  "read (worker_run_memory_mb), or the container's memory is short")
    return words
