"""A calibration worker keeps the memory its runs free, and gives it back when idle.

Why: glibc serves every allocation above its mmap threshold (at most 32 MiB)
with a fresh ``mmap`` and unmaps it on ``free``. A full-frame detector1 run
(2048 x 2048, 10 groups) allocates and frees arrays of 160 MiB a few dozen
times, so every step faults its arrays in again, page by page, zeroed by the
kernel: measured on the 2-core machine (bench/README.md), 8.7-10.9 s of
system time in a 21.5-26 s run, and two runs at once each slower still
(they share the memory bandwidth that zeroing uses). With freed memory kept
in the heap for the next allocation, the same run takes 14.2-14.5 s with
0.3 s of system time, two at once 14.1-15.0 s each; the peak resident memory
is 2,800 MiB against 2,735-2,773 MiB, and the products are the same bytes
(only where arrays live changes, never what is computed).

A worker that stays idle gives the heap back (``return_freed_memory``):
otherwise every worker would hold its largest run's memory for good.

glibc only (``mallopt``, ``malloc_trim``); elsewhere both are no-ops that
say so, and the worker runs as before.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

# How long a worker waits for work before it returns its heap to the system.
# Long enough that the exposures of one downlink reuse it (a refault of a
# full-frame run's 2.8 GB costs seconds of system time), short enough that an
# idle deployment does not sit on every worker's peak.
IDLE_RETURN_SECONDS = 300.0


# What the workers of a daemon may hold together, at most, of the memory it
# may use (its container's limit, else the host's): the rest is the daemon's
# own, the worker server's and the planner's.
RUN_MEMORY_SHARE = 7 / 8
# A run's bound is never below this: a normal full-frame detector1 run peaks
# at about 2,800 MiB (above), and it must never be taken for a runaway. A
# daemon whose memory leaves its workers less each is sized too small for
# full-frame data whatever the bound (deploy/: 4 GB a worker).
RUN_MEMORY_FLOOR_MB = 4096


def run_memory_bound_bytes(configured_mb: int | None, *, workers: int,
                           memory: int | None) -> int:
    """The memory one run may use while it goes (its worker and the worker's
    children): past it the run is ended, so that one runaway run (a forged
    NINTS x NGROUPS, a huge file) never takes the container down with every
    other run. ``configured_mb``: ``worker_run_memory_mb`` (0: no bound).
    None: each of the daemon's ``workers`` (all its pools') an equal part of
    ``RUN_MEMORY_SHARE`` of ``memory`` (its limit), so that all of them at
    their bound still fit, and never less than ``RUN_MEMORY_FLOOR_MB``.
    0: no bound."""
    if configured_mb is not None:
        return configured_mb << 20
    share = int(memory * RUN_MEMORY_SHARE) // max(1, workers) if memory else 0
    return max(share, RUN_MEMORY_FLOOR_MB << 20)


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except (ValueError, OSError, AttributeError):  # not glibc, no such name, no confstr
        return None


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and never trim it on free.

    ``M_MMAP_MAX = 0``: no allocation gets its own mapping; ``M_TRIM_THRESHOLD
    = -1``: free never hands the top of the heap back (mallopt(3): "-1
    disables trimming completely"). True if both took effect.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo() -> _Mallinfo2 | None:
    libc = _glibc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:  # glibc before 2.33, or none
        return None
    fn.restype = _Mallinfo2
    return fn()


def kept_free_bytes() -> int:
    """Bytes the heap holds free for the next allocation (``mallinfo2().fordblks``).

    Resident memory minus these is what the process's live objects use: the
    pool replaces a worker whose runs leave too much of that behind
    (a leak, a cache), not one that keeps its heap on purpose. 0 where
    glibc (2.33 or later) cannot say. Not all of it is resident: free
    chunks amid the heap that ``malloc_trim`` gave back (an idle worker's)
    or never touched still count here (``malloc_in_use_bytes``).
    """
    info = _mallinfo()
    return 0 if info is None else int(info.fordblks)


def malloc_in_use_bytes() -> int:
    """Bytes malloc has handed out and not had back (``uordblks + hblkhd``):
    a floor of what live objects use, those Python keeps in its own arenas
    aside. 0 where glibc (2.33 or later) cannot say."""
    info = _mallinfo()
    return 0 if info is None else int(info.uordblks) + int(info.hblkhd)


def return_freed_memory() -> bool:
    """Give the free parts of the heap back to the system (``malloc_trim(0)``).

    True if memory was returned. The heap stays kept for the next run.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
