"""How much memory this process uses, and how much its container may use.

Read by a worker after each task (worker_process.py: a worker that keeps too
much in use is replaced), by the pool while a run goes (worker_pool.py: a
run over its bound is ended) and by the planner (planner_restore.py: a
planner over its memory budget starts again from its own snapshot).
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


def host_memory_bytes() -> int | None:
    """The host's physical memory; None where the system cannot say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def memory_to_share_bytes() -> int | None:
    """What this daemon's processes may use together: its cgroup's limit, else the host's memory."""
    return container_limit_bytes() or host_memory_bytes()


def resident_bytes(pid: int, *, with_children: bool = False) -> int:
    """Resident memory of process ``pid`` now, and of its children (stcal's
    pool processes of a run given several cores) when asked; 0 where /proc
    cannot say (the process is gone)."""
    total = _statm_resident(pid)
    if with_children:
        total += sum(_statm_resident(child) for child in _children(pid))
    return total


def _statm_resident(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``: read from each /proc/<pid>/stat
    (``/proc/<pid>/task/*/children`` is not in every kernel)."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return found
