"""How much memory this process uses, and how much its container may use.

Read by a worker after each task (worker_process.py: a worker that keeps too
much in use is replaced), by the pool while a run goes (worker_pool.py: a
run over its bound is ended) and by the planner (planner_restore.py: a
planner over its memory budget starts again from its own snapshot).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from calstream.steps.worker_memory import kept_free_bytes, malloc_in_use_bytes

# Where cgroup hierarchies are mounted, and which cgroups this process is in.
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_SELF_CGROUP = Path("/proc/self/cgroup")
_NO_LIMIT_ABOVE = 2**60  # cgroup v1 writes "no limit" as a number near 2**63


def resident_in_use_bytes() -> int:
    """Resident memory in use now (not the peak, which never comes down): the
    heap's free memory, kept on purpose for the next allocations, is not
    counted. 0 where /proc cannot say.

    Two floors, the higher taken: resident minus the heap's free bytes
    counts free chunks that are not resident too (given back amid the heap
    by an idle worker's ``malloc_trim``, or never touched), and was 0 after
    such a trim with 50 MiB of live arrays (a leaking worker went unseen,
    a planner never reached its budget; until session 46); what malloc has
    handed out misses only Python's own arenas. Never above resident."""
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
    return min(resident, max(0, resident - kept_free_bytes(), malloc_in_use_bytes()))


def container_limit_bytes(files: tuple[Path, ...] | None = None) -> int | None:
    """The memory limit of the cgroup this process runs in (a Kubernetes
    pod's ``limits.memory``, systemd's ``MemoryMax``): the smallest that
    ``files`` (default: ``limit_files()``) write; None if there is none or
    none can be read."""
    limits = [limit for path in (limit_files() if files is None else files)
              if (limit := _limit(path)) is not None]
    return min(limits, default=None)


def limit_files(root: Path = _CGROUP_ROOT, self_cgroup: Path = _SELF_CGROUP) -> tuple[Path, ...]:
    """Where this process's memory limits are written: the file of its own
    cgroup and of each ancestor's (cgroup v2's ``memory.max``, v1's
    ``memory.limit_in_bytes``), as /proc/self/cgroup names them, then the
    top of each hierarchy. The top alone is right in a container with a
    cgroup namespace of its own (it reads "/"), not in a systemd unit: its
    ``MemoryMax`` is written in its own cgroup, deep in the host's tree, and
    the top of a cgroup v2 tree has no ``memory.max`` at all."""
    found: list[Path] = []
    for v2, directory, top in _memory_cgroups(root, self_cgroup):
        name = "memory.max" if v2 else "memory.limit_in_bytes"
        while directory != top:
            found.append(directory / name)
            directory = directory.parent
    found += [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    return tuple(dict.fromkeys(found))


def oom_kills(root: Path = _CGROUP_ROOT, self_cgroup: Path = _SELF_CGROUP) -> int | None:
    """How many processes of this process's cgroup (and those below it) an
    OOM killer has killed so far: cgroup v2's ``oom_kill`` in
    ``memory.events``, v1's in ``memory.oom_control``. None where it cannot
    be read. A worker found dead by SIGKILL while this rose was the OOM
    killer's (worker_pool.py says so in the run's loss)."""
    for v2, directory, _ in _memory_cgroups(root, self_cgroup):
        try:
            text = (directory / ("memory.events" if v2 else "memory.oom_control")).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def _memory_cgroups(root: Path, self_cgroup: Path) -> list[tuple[bool, Path, Path]]:
    """This process's memory cgroups, as /proc/self/cgroup names them:
    (cgroup v2, its directory, the top of its hierarchy)."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, where = rest.partition(":")
        if (hierarchy, controllers) == ("0", ""):
            v2, top = True, root
        elif "memory" in controllers.split(","):
            v2, top = False, root / "memory"
        else:
            continue
        parts = PurePosixPath(where).parts
        if not parts or parts[0] != "/" or ".." in parts:
            continue  # not a cgroup's path: nothing of it is read
        found.append((v2, top.joinpath(*parts[1:]), top))
    return found


def _limit(path: Path) -> int | None:
    """The limit ``path`` writes; None for none ("max", v1's huge number),
    a file that cannot be read, or garbage."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        limit = int(text)
    except ValueError:
        return None
    return limit if 0 < limit < _NO_LIMIT_ABOVE else None


def host_memory_bytes() -> int | None:
    """The host's physical memory; None where the system cannot say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def memory_to_share_bytes() -> int | None:
    """What this daemon's processes may use together: its cgroup's limit, else the host's memory."""
    return container_limit_bytes() or host_memory_bytes()


def resident_bytes(pid: int, *, children: Iterable[int] = ()) -> int:
    """Resident memory of process ``pid`` now, and of ``children`` (its
    children as ``children_of`` found them: stcal's pool processes); 0 for
    each process /proc cannot tell of (gone)."""
    return _statm_resident(pid) + sum(_statm_resident(child) for child in children)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` now: read from each
    /proc/<pid>/stat (``/proc/<pid>/task/*/children`` is not in every
    kernel: not in this project's CI's). It costs a read of every process's
    stat: about 20 us each (1.8 ms for 95 processes, measured on the 2-core
    CI machine), so a caller that polls asks it less often than it reads
    the memory of what it found (worker_pool.py)."""
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


def _statm_resident(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
