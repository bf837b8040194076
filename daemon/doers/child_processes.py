"""Child processes that do not outlive the daemon, even when it is SIGKILLed."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Call in the child: the kernel sends ``sig`` when the parent dies.

    PDEATHSIG fires when the *thread* that forked exits, so children must be
    started from a thread that lives as long as the daemon (the main thread,
    or the event loop's thread).
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host runs under ``pid``. A pid read from a
    file is untrusted: one that cannot name a process (0 and negatives name
    process groups; a huge one overflows) cannot be judged, and what cannot
    be judged is taken as running, so nothing is removed or taken over on
    its word."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # not ours to signal, or not a pid we can judge
    return True
