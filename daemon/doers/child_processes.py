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


def lead_own_group() -> bool:
    """Call in a worker, first: it leads a process group of its own, which
    every child it starts joins (``subprocess``'s, a step's, multiprocessing's),
    so the pool can end them with it (``kill_group``) whichever way it ends:
    PDEATHSIG reaches only multiprocessing's children (children_die_with_me),
    and a child orphaned by a killed worker ran on for nobody. Out of the
    daemon's group, a terminal's Ctrl-C reaches the daemon alone, which stops
    its runs itself. False where it cannot be (the group stays the daemon's).

    Out of the daemon's group, it is in a *background* group of the daemon's
    terminal under a foreground ``calstream run``: with ``stty tostop`` the
    kernel stopped it (SIGTTOU) at its first line to its stderr (the
    terminal), and the pool killed it as stopped, run after run. Ignored,
    SIGTTOU lets the write through (POSIX), and SIGTTIN makes a read of the
    terminal fail (EIO) instead of stopping it. Both stay ignored in its
    children, as the group does."""
    try:
        os.setpgid(0, 0)
    except OSError:
        return False
    for stopping in (signal.SIGTTOU, signal.SIGTTIN):
        signal.signal(stopping, signal.SIG_IGN)
    return True


def kill_group(leader: int, *, reaped: bool = False) -> None:
    """SIGKILL what is left of the process group a worker (pid ``leader``)
    led (lead_own_group): its run's children, orphaned. While any of them
    lives the group's number stays taken, so no new process can get it as
    its pid. ``reaped``: the worker has ended and been reaped (its exit code
    known), its pid free: a process under that pid now is another one (the
    pid taken again once the group was empty: a worker found dead long after
    it ended), maybe leading its own group (another worker: each leads one),
    and is left alone; a zombie there is the worker still (its server died:
    reparented, not reaped yet). Never this process's own group, nor a
    number that names none."""
    if isinstance(leader, bool) or not isinstance(leader, int) or leader <= 1:
        return
    if reaped and _runs_under(leader):
        return  # the pid is another process's now: its group is not the worker's
    try:
        if leader == os.getpgrp():
            return
        os.killpg(leader, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OverflowError):
        pass  # none left, or not ours


def _runs_under(pid: int) -> bool:
    """Whether a process that is not a zombie runs under ``pid`` (Linux's
    /proc; one that cannot be read: none)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat.rindex(b")") + 2  # after the command's name, which may hold ")"
    return stat[state:state + 1] != b"Z"


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


# multiprocessing starts a child by executing this file (set_executable), which
# arms PDEATHSIG in the child and then becomes Python: PDEATHSIG survives
# execve, and Python offers no hook between fork and exec for children
# started by multiprocessing. -IS: nothing of site-packages or PYTHON* needed.
_GUARD = """#!{python} -IS
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
if str(os.getppid()) != os.environ.get("CALSTREAM_GUARD_PARENT"):
    os._exit(1)  # the parent died before prctl took effect
os.execv({python!r}, [{python!r}, *sys.argv[1:]])
"""


def children_die_with_me() -> bool:
    """Call in a process that may start multiprocessing children (a worker
    whose run uses several cores: stcal's pools): each child is killed when
    this process dies, even by SIGKILL, so a killed daemon leaves no
    grandchildren. False (nothing changed) where it cannot be arranged."""
    import hashlib
    import multiprocessing
    import sys
    import tempfile
    from pathlib import Path

    python = sys.executable
    if not python or len(python) > 120 or any(c.isspace() for c in python):
        return False  # a shebang line cannot carry it
    try:
        home = Path(tempfile.gettempdir()) / f"calstream-{os.getuid()}"
        home.mkdir(mode=0o700, exist_ok=True)
        st = home.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return False  # not ours alone: never execute what another user could write
        guard = home / f"child-guard-{hashlib.sha256(python.encode()).hexdigest()[:12]}"
        text = _GUARD.format(python=python)
        if not guard.exists() or guard.read_text() != text:
            partial = guard.with_name(f"{guard.name}.{os.getpid()}")
            partial.write_text(text)
            partial.chmod(0o700)
            partial.replace(guard)
    except OSError:
        return False
    os.environ["CALSTREAM_GUARD_PARENT"] = str(os.getpid())
    multiprocessing.set_executable(str(guard))
    return True
