"""Every worker start, off the event loop, with the worker server watched meanwhile.

A worker's ``Process.start()`` asks the worker server (worker_forkserver.py)
for a fork and blocks until the server sends the new pid: a fraction of a
second from a warm server, the whole jwst import from a new one (a first
start, or one after the server died), forever from a server that is stopped
or stuck. So no start runs on the event loop: each runs in the *starter*,
one thread of the daemon's that lives as long as the daemon, which also
(re)starts the server when the last one is gone (``forkserver.ensure_running``).
The server dies with the thread that started it (PR_SET_PDEATHSIG), so that
thread must be one that never ends: not one of anyio's, which end when idle.
Being one thread, it also keeps the starts of every pool in one line, which
is what the one server does anyway.

While a start waits, the event loop looks at the server every so often
(``wait``): a server that used no CPU for ``hung_seconds`` while a start was
waiting for it (deciders/server_hang.py) is killed; the start then fails
(end of file from the dead server), and the next start begins with a new
server. A server whose socket cannot be reached any more (its file removed
from the temporary directory) is killed too: it would refuse every start
while alive; and the directory the next one binds its socket in is made
again if a cleaner took it. Each new server after the first is counted
(``calstream_worker_server_restarts_total{cause}``) and logged, when the
start that finds it gone starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from multiprocessing import forkserver, util
from typing import Any, TypeVar

import anyio

from calstream.daemon.deciders.server_hang import HangJudge
from calstream.daemon.operations.metrics import Metrics

log = logging.getLogger("calstream.pool")

T = TypeVar("T")

# Seconds a server may use no CPU while a start waits for it before it is killed.
SERVER_HUNG_SECONDS = 60.0

_killed: dict[int, str] = {}  # pid -> why this module killed it ("hung", "unreachable")
_seen: list[int | None] = [None]  # the server the starter last found serving


def started_server_pid() -> int | None:
    """The running server's pid, or None before the first start. CPython's
    private attribute (3.8 to 3.13): tests/unit/test_worker_server_watch.py
    fails if a Python upgrade takes it away, and without it nothing is
    judged hung (a start then waits for the server as long as it takes)."""
    return getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)


def server_state(pid: int | None) -> tuple[str, int] | None:
    """(state letter, CPU clock ticks used) of the server, from /proc; None if unreadable."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[11]) + int(fields[12])  # state; utime + stime
    except (OSError, IndexError, ValueError):
        return None


def server_serving(pid: int | None) -> bool:
    """Whether the server ``pid`` is still there (a zombie, killed and not
    yet reaped, is not); True when there is nothing to judge by (no pid,
    no /proc)."""
    if pid is None:
        return True
    state = server_state(pid)
    if state is None:
        # Gone, if this process can read its own entry: else /proc is not
        # there to judge by, and a lost worker stays a lost worker (taken
        # for a server's loss, a run that crashes its worker every time
        # would be retried for good as an infrastructure fault).
        return server_state(os.getpid()) is None
    return state[0] not in ("Z", "X")


class _Starter:
    """The one thread every start runs on (see the module's docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], T]) -> Future:
        future: Future = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                # Daemonic: never joined at exit (a start may wait on a
                # stopped server); the process's end ends it, and the server with it.
                thread = threading.Thread(target=self._serve, name="calstream-worker-starter",
                                          daemon=True)
                # Kept only once started: a thread that could not start
                # (EAGAIN at a pids limit) raises here, and the next start
                # tries again; kept, it would leave every start queued for good.
                thread.start()
                self._thread = thread
        self._jobs.put((job, future))
        return future

    def _serve(self) -> None:
        while True:
            job, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # noqa: BLE001 - the waiter gets it from the future
                future.set_exception(exc)


_starter = _Starter()


def submit(job: Callable[[], T], metrics: Metrics) -> Future:
    """Run ``job`` (a worker's ``Process.start()``) in the starter thread,
    after making sure a server runs; its Future. Await it with ``wait``."""
    return _starter.submit(partial(_with_server, job, metrics))


def _with_server(job: Callable[[], T], metrics: Metrics) -> T:
    try:
        _temp_dir_back()
        forkserver.ensure_running()
        _note_restart(metrics)
        return job()
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        _unreachable(exc)
        raise
    finally:
        _note_restart(metrics)  # start() itself starts one if the server died just now


def _temp_dir_back() -> None:
    """multiprocessing makes its temporary directory once per process and
    binds each new server's socket in it: a /tmp cleaner that removed it
    would fail every new server for good. Made again, and used only if it
    is this user's alone (another user could have made it meanwhile)."""
    path = util.get_temp_dir()
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"multiprocessing's temporary directory {path} is not this "
                              "user's alone: no worker server is started in it")


def _note_restart(metrics: Metrics) -> None:
    pid, last = started_server_pid(), _seen[0]
    if pid is None or pid == last:
        return
    _seen[0] = pid
    if last is None:
        return  # the first server of this process
    cause = _killed.pop(last, "died")
    metrics.worker_server_restarts.labels(cause=cause).inc()
    log.warning("worker server %d %s: started a new one (%d); the next workers wait for its "
                "jwst import, runs its workers had are retried", last,
                "was gone" if cause == "died" else f"was killed ({cause})", pid,
                extra={"fault": "infrastructure"})


def _unreachable(exc: BaseException) -> None:
    """A start could not reach the server's socket: a server alive without it
    would refuse every start. Killed; the next start starts a new one."""
    pid = started_server_pid()
    state = server_state(pid)
    if state is not None and state[0] != "Z":  # a dead one is started again anyway
        log.warning("worker server %d cannot be reached (%s): killed", pid, exc,
                    extra={"fault": "infrastructure"})
        _kill(pid, "unreachable")


def _kill(pid: int, cause: str) -> None:
    # The server is this process's child and only ensure_running reaps it:
    # its pid is still its own (a zombie at worst), never another process's.
    _killed[pid] = cause
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wake(loop: asyncio.AbstractEventLoop, event: anyio.Event, _future: Future) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
        loop.call_soon_threadsafe(event.set)


async def wait(future: Future, hung_seconds: float = SERVER_HUNG_SECONDS) -> Any:
    """``future``'s result, awaited without holding the event loop; a server
    that makes no progress for ``hung_seconds`` while the start runs is
    killed meanwhile (the start then fails). Cancelling the wait leaves the
    start to finish in the starter thread: its caller keeps ``future``."""
    done = anyio.Event()
    future.add_done_callback(partial(_wake, asyncio.get_running_loop(), done))
    judge = HangJudge(hung_seconds)
    look = min(1.0, max(0.05, hung_seconds / 4))
    while not future.done():
        with anyio.move_on_after(look):
            await done.wait()
        if not future.running():
            continue  # behind another pool's start, or done
        pid = started_server_pid()
        state = server_state(pid)
        if judge.hung(time.monotonic(), pid, state[1] if state else None):
            log.warning("worker server %d used no CPU for %.0fs while a worker's start waited "
                        "for it (state %s): killed; a new one is started", pid, hung_seconds,
                        state[0], extra={"fault": "infrastructure"})
            _kill(pid, "hung")
            judge = HangJudge(hung_seconds)
    return future.result()
