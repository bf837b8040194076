"""A worker pool's processes: started, replaced, ended, and all ended at close.

Kept apart from ``worker_pool`` (which hands turns out and exchanges a task
and its result with a worker): this is each worker's life. A worker is a
non-daemonic process (worker_process.py) forked from a warm server process
(worker_forkserver.py) that dies with the daemon (PDEATHSIG); one to end
is asked first -- an idle one to return, one mid-task by SIGTERM, so it
leaves nothing to multiprocessing's resource tracker -- and killed after
STOP_GRACE seconds, in a thread of its own so the event loop never waits
for it. ``WorkerLifecycle`` is a mixin of
``WorkerPool``, whose ``__init__`` makes the lists it keeps.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import DupFd
from typing import Any

from calstream.daemon.doers.worker_forkserver import server_ready
from calstream.daemon.doers.worker_process import worker_main

# Seconds a worker asked to end (idle: return; mid-task: SIGTERM) has before SIGKILL.
STOP_GRACE = 3.0


@dataclass
class Worker:
    """One warm worker process and its end of the pipe."""

    name: str
    process: Any
    conn: Connection
    tasks_left: int
    ready: bool = False
    cores: int = 0  # of the run it does now (0: idle)
    started: float = field(default_factory=time.monotonic)


class WorkerLifecycle:
    async def server_ready(self) -> None:
        """The worker server started and serving, waited for off the event
        loop (worker_forkserver.server_ready): call before ``start`` on a loop."""
        await server_ready(self._ctx)

    def start(self, *, on_first_work: bool = False) -> None:
        """Start the workers (forks of the warm server: ``server_ready`` first,
        on an event loop). ``on_first_work``: start none now; the first run
        starts them all (owed), and waits for a warm-up, which its task
        timeout does not count."""
        if on_first_work:
            self._owed += self.size
            return
        for _ in range(self.size):
            self._idle.append(self._spawn())

    def _spawn(self) -> Worker:
        self._counter += 1
        name = f"{self.stage}-{self._counter}"
        parent, child = self._ctx.Pipe()
        # A forked worker inherits the server's environment and stdio, as
        # they were at the server's start: it takes the daemon's as they are
        # now, as a spawned worker did (worker_forkserver.py).
        proc = self._ctx.Process(
            target=worker_main, name=f"calstream-{name}", daemon=False,
            args=(child, {**os.environ, **self.env}, self.initializer, self.classifier,
                  self.max_tasks, os.getpid(), self.idle_return_seconds),
            kwargs={"stdio": tuple((fd, DupFd(fd)) for fd in (1, 2) if _is_open(fd))})
        proc.start()
        child.close()
        w = Worker(name, proc, parent, self.max_tasks)
        self._all.append(w)
        return w

    def _replace(self, w: Worker, cause: str) -> None:
        self._end(w, mid_task=cause in ("cancelled", "timeout", "died"))
        if cause != "retired":
            self.metrics.worker_restarts.labels(stage=self.stage, cause=cause).inc()
        if cause == "cancelled":
            # Most often the daemon stopping: a worker started now would be
            # killed mid-warm-up by close(). The next run starts it instead.
            self._owed += 1
        elif not self._closed:
            self._idle.append(self._spawn())

    def _end(self, w: Worker, *, mid_task: bool) -> None:
        """End a worker without waiting for it: an idle one is asked to return,
        one mid-task gets SIGTERM (worker_process: its handler runs
        multiprocessing's exit hooks), and either is killed if still there
        after STOP_GRACE seconds. SIGKILL alone would leave the named
        semaphores a worker holds (crds makes one at import) to the resource
        tracker, which warns of "leaked semaphore objects" at the daemon's exit."""
        if w in self._all:
            self._all.remove(w)
        with contextlib.suppress(KeyError):  # a worker that never finished a task
            self.metrics.worker_rss.remove(self.stage, w.name)
        with contextlib.suppress(OSError, ValueError):
            w.process.terminate() if mid_task else w.conn.send(None)

        def reap() -> None:
            w.process.join(STOP_GRACE)
            if w.process.exitcode is None:
                w.process.kill()
                w.process.join(5)
            w.conn.close()
        # A thread: joining here would hold the event loop (run() calls this).
        ender = threading.Thread(target=reap, name=f"end-{w.name}", daemon=True)
        ender.start()
        self._ending = [*(t for t in self._ending if t.is_alive()), ender]

    def close(self) -> None:
        """End every worker and wait for them. SIGTERM rather than a request
        to return: a worker still warming up (importing jwst) reads no request
        before it is done, and would be killed at STOP_GRACE."""
        self._closed = True
        for w in list(self._all):
            self._end(w, mid_task=True)
        self._idle.clear()
        for ender in self._ending:
            ender.join()
        self._ending.clear()


def _is_open(fd: int) -> bool:
    """A daemon started with stdout or stderr closed has none to hand over."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def kill_left_over(pool_ref: weakref.ref) -> None:
    """The exit hook of a pool never closed: its workers are not daemonic."""
    pool = pool_ref()
    if pool is not None and not pool._closed:
        for w in list(pool._all):
            w.process.kill()
            w.process.join(timeout=5)
