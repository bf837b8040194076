"""How much memory this process uses, and how much its container may use.

Read by a worker after each task (worker_process.py: a worker that keeps too
much in use is replaced) and by the planner (planner_restore.py: a planner
over its memory budget starts again from its own snapshot).
"""

from __future__ import annotations

import os
from pathlib import Path

from calstream.steps.worker_memory import kept_free_bytes

# cgroup v2, then v1: where a container's memory limit is written.
_LIMIT_FILES = (Path("/sys/fs/cgroup/memory.max"),
                Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
_NO_LIMIT_ABOVE = 2**60  # cgroup v1 writes "no limit" as a number near 2**63


def resident_in_use_bytes() -> int:
    """Resident memory in use now (not the peak, which never comes down): the
    heap's free memory, kept on purpose for the next allocations, is not
    counted. 0 where /proc cannot say."""
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, resident - kept_free_bytes())


def container_limit_bytes(files: tuple[Path, ...] = _LIMIT_FILES) -> int | None:
    """The memory limit of the cgroup this process runs in (a Kubernetes
    pod's ``limits.memory``, systemd's ``MemoryMax``); None if there is none
    or it cannot be read."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            return None
        return limit if 0 < limit < _NO_LIMIT_ABOVE else None
    return None
