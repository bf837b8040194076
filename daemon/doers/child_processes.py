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
