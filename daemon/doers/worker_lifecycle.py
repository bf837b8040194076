"""A worker pool's processes: started, replaced, ended, and all ended at close.

Kept apart from ``worker_pool`` (which hands turns out and exchanges a task
and its result with a worker): this is each worker's life. A worker is a
non-daemonic process (worker_process.py) forked from a warm server process
(worker_forkserver.py) that dies with the daemon (PDEATHSIG). Every worker
is *owed* first (the pool's start, a replacement) and started by ``fill``
when a run finds no idle worker: in the starter thread, never on the event
loop, with the server watched meanwhile (worker_server_watch.py); a start
that fails is retried with jitter and parked (parking.py), never the run's
fault. One to end
is asked first -- an idle one to return, one mid-task by SIGTERM, so it
leaves nothing to multiprocessing's resource tracker -- and killed after
STOP_GRACE seconds, in a thread of its own so the event loop never waits
for it. ``WorkerLifecycle`` is a mixin of
``WorkerPool``, whose ``__init__`` makes the lists it keeps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import DupFd
from typing import Any

from calstream.daemon.doers import worker_server_watch
from calstream.daemon.doers.child_processes import kill_group
from calstream.daemon.doers.parking import until_done
from calstream.daemon.doers.worker_losses import WorkerLost
from calstream.daemon.doers.worker_process import worker_main

log = logging.getLogger("calstream.pool")

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
    server: int | None = None  # the pid of the worker server it was forked from
    # Why the pool's checks ended its run (worker_pool._run_ends), which may
    # have killed it as its answer came whole: it is replaced, never handed
    # another run (session 44).
    lost: WorkerLost | None = None


class WorkerLifecycle:
    def start(self) -> None:
        """Owe the pool's workers: the first run starts them (``fill``), or
        ``fill`` now, to have them warm before the first item."""
        self._owed += self.size
        if self.run_memory:
            log.info("%s: a run may hold up to %d MiB while it goes (worker_run_memory_mb); "
                     "one over it is killed", self.stage, self.run_memory >> 20)

    async def fill(self) -> None:
        """Start every worker owed, off the event loop, one at a time; wait
        out (retries with jitter, then parked) starts that fail. The first
        start of a process also starts the server: its jwst import."""
        if not self._owed or self._closed:
            return  # every run's path: no turn of the loop for an uncontended lock
        async with self._filling:
            while self._owed and not self._closed:
                await until_done(self._start_one, self._start_faults, cause_of=_start_fault)

    async def _start_one(self) -> None:
        if self._closed:  # closed while parked: no start is owed any more
            return
        # A start whose waiter was cancelled goes on in the starter thread:
        # the next waiter takes it over (and close() ends what it started).
        if self._starting is None:
            self._starting = worker_server_watch.submit(self._new_worker, self.metrics)
        future = self._starting
        try:
            w = await worker_server_watch.wait(future, self.server_hung_seconds)
        finally:
            if future.done():
                self._starting = None
        if w is not None:
            self._owed -= 1
            self._idle.append(w)

    def _new_worker(self) -> Worker | None:
        """In the starter thread: blocks until the server has forked the
        worker (a new server: until its import is done). None: the pool
        closed meanwhile, and the worker is ended."""
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
            kwargs={"stdio": tuple((fd, _PassedFd(fd)) for fd in (1, 2) if _is_open(fd))})
        try:
            proc.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        w = Worker(name, proc, parent, self.max_tasks,
                   server=worker_server_watch.started_server_pid())
        with self._lock:  # against close(): every worker it does not end is ended here
            closed = self._closed
            if not closed:
                self._all.append(w)
        if closed:
            self._end(w, mid_task=True)
            return None
        return w

    def _replace(self, w: Worker, cause: str) -> None:
        """End ``w``; its successor is owed, started by the ``fill`` of a run
        that finds no idle worker (a cancelled run's most often at the daemon's stop: none then)."""
        self._end(w, mid_task=cause in ("cancelled", "timeout", "died", "run_memory",
                                           "stopped"))
        if cause != "retired":
            self.metrics.worker_restarts.labels(stage=self.stage, cause=cause).inc()
        if not self._closed:
            self._owed += 1

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
            # Its runs' children, orphaned: a killed worker's (OOM, the
            # memory bound, a time-out, a stop) ran on for nobody. Reaped
            # already, its pid may be another process's (kill_group).
            kill_group(w.process.pid, reaped=w.process.exitcode is not None)
            w.conn.close()
        # A thread: joining here would hold the event loop (run() calls this).
        ender = threading.Thread(target=reap, name=f"end-{w.name}", daemon=True)
        ender.start()
        self._ending = [*(t for t in self._ending if t.is_alive()), ender]

    def close(self) -> None:
        """End every worker and wait for them. SIGTERM rather than a request
        to return: a worker still warming up (importing jwst) reads no request
        before it is done, and would be killed at STOP_GRACE."""
        with self._lock:  # a start under way ends its worker itself (_new_worker)
            self._closed = True
            workers = list(self._all)
        for w in workers:
            self._end(w, mid_task=True)
        self._idle.clear()
        for ender in self._ending:
            ender.join()
        self._ending.clear()


class _PassedFd:
    """A descriptor handed to a worker with the start's own request to the
    server (SCM_RIGHTS): ``DupFd`` made at pickling, inside the start. Made
    before it, ``DupFd`` falls back to multiprocessing's resource sharer, a
    listening socket of the daemon's in the temporary directory: once a
    /tmp cleaner took that, every worker died at its start for good (its
    runs lost workers, then dead letters). The worker ``detach()``es it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self):
        return _same, (DupFd(self.fd),)


def _same(passed: Any) -> Any:
    return passed


def _start_fault(exc: BaseException) -> str:
    """Whatever stops a worker's start (the server gone or killed mid-start,
    EMFILE, ENOMEM) is the daemon's, never the run's: no data is sent at a start."""
    return "worker_start"


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
            kill_group(w.process.pid, reaped=w.process.exitcode is not None)
