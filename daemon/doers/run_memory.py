"""A run's memory while it goes: past its bound, its worker is killed at once.

Between two polls of a run (every 0.2 s) the pool asks ``over_bound``: a run
over its bound is killed now, before the kernel's OOM killer takes the
container (cgroup v2's group kill) and every run in it. SIGKILL at once, not
SIGTERM: what the run asks for next may be the last straw. Its children die
with it (PDEATHSIG: child_processes.children_die_with_me) and count whatever
cores it was given: an operator's step parameter ``maximum_cores`` starts
stcal's processes in a run of one core too (their memory escaped). A run
given several cores was given the part of idle workers too (core_sharing),
so its bound is that many times a run's (the caller multiplies).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from calstream.daemon.doers.process_memory import children_of, resident_bytes

log = logging.getLogger("calstream.pool")

# How often a run's children are looked for (a scan of /proc: process_memory.
# children_of); their memory is read at every poll in between. A child
# started since is counted within this long.
CHILDREN_SCAN_SECONDS = 1.0


def over_bound(process: Any, name: str, bound: int, request: Any) -> str | None:
    """Why worker ``name`` (``process``) was killed, if its run (and its
    children, looked for at most every CHILDREN_SCAN_SECONDS and kept on
    ``request``) holds more than ``bound`` bytes; None if it does not."""
    now = time.monotonic()
    if now - request.children_scanned_at >= CHILDREN_SCAN_SECONDS:
        request.children = children_of(process.pid)
        request.children_scanned_at = now
    used = resident_bytes(process.pid, children=request.children)
    if used <= bound:
        return None
    with contextlib.suppress(OSError, ValueError):
        process.kill()
    log.warning("worker %s held %d MiB during its run, more than a run may use "
                "(%d MiB, worker_run_memory_mb): killed", name, used >> 20, bound >> 20)
    return (f"worker {name} held {used >> 20} MiB during the run, more than a run may use "
            f"({bound >> 20} MiB, worker_run_memory_mb), and was killed")
