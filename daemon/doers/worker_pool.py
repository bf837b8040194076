"""Warm worker processes that run calibration off the event loop.

Why not concurrent.futures.ProcessPoolExecutor: one dead worker breaks the
whole executor, a hung task cannot be killed on its own, and it reports nothing
about memory. Here each worker is a spawned process that imports the heavy
modules (jwst) once, runs one task at a time, and reports its peak memory with
every result; a worker that dies or overruns its timeout is replaced and the
task fails as *transient*, so the caller retries it.
"""

from __future__ import annotations

import contextlib
import heapq
import importlib
import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.doers.child_processes import die_with_parent
from calstream.daemon.operations import logs
from calstream.daemon.operations.metrics import Metrics

log = logging.getLogger("calstream.pool")


class WorkerLost(RuntimeError):
    """The worker process died or was killed; the task may be retried."""


@dataclass
class TaskFailure:
    error_type: str
    message: str
    classification: str  # transient | permanent | skipped
    traceback: str = ""


@dataclass
class TaskOutcome:
    value: Any = None
    failure: TaskFailure | None = None
    peak_rss_bytes: int = 0
    worker: str = ""
    wall_seconds: float = 0.0
    rss_bytes: int = 0  # resident after the task: what the worker keeps


def _resolve(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _current_rss() -> int:
    """Resident memory now (not the peak, which never comes down)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _worker_logging() -> None:
    """Warnings and errors to stderr (the daemon's log, in its format: see
    logs.worker_setup); each task's full log goes to its own file (see _task_log)."""
    logs.worker_setup()
    # Python warnings from the pipelines belong in the run's log, not on stderr.
    logging.captureWarnings(True)


@contextlib.contextmanager
def _task_log(path: str | None):
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _task_env(overrides: dict[str, str] | None):
    """Per-task environment (a replay's CRDS_CONTEXT): the task functions
    re-read CRDS configuration at each call (crds_env.refresh_crds), so setting
    it here, and restoring the worker's own afterwards, is enough."""
    if not overrides:
        yield
        return
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_main(conn: Connection, env: dict[str, str], initializer: str | None,
                 classifier: str | None, max_tasks: int, parent_pid: int) -> None:
    # A SIGKILLed daemon must not leave workers calibrating for nobody.
    die_with_parent(parent_pid, signal.SIGKILL)
    # The environment (CRDS_PATH, CRDS_CONTEXT, ...) must be in place before any
    # import: crds reads it when first imported.
    os.environ.update(env)
    _worker_logging()
    if initializer:
        _resolve(initializer)()
    classify = _resolve(classifier) if classifier else (lambda exc, task: "permanent")
    conn.send(("ready", os.getpid()))
    for _ in range(max_tasks):
        try:
            request = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if request is None:
            return
        fn_path, kwargs, log_path, task_env = request
        try:
            with _task_log(log_path), _task_env(task_env):
                value = _resolve(fn_path)(**kwargs)
            conn.send(("ok", value, _peak_rss(), _current_rss()))
        except BaseException as exc:  # noqa: BLE001 - report every failure to the parent
            try:
                kind = classify(exc, kwargs)
            except Exception:  # a broken classifier must not hide the real error
                kind = "permanent"
            conn.send(("error", TaskFailure(type(exc).__name__, str(exc)[:4000], kind,
                                            traceback.format_exc()[-8000:]), _peak_rss(),
                       _current_rss()))
    # Returning after max_tasks (recycling) bounds slow memory growth.


@dataclass
class _Worker:
    name: str
    process: Any
    conn: Connection
    tasks_left: int
    ready: bool = False
    started: float = field(default_factory=time.monotonic)


class WorkerPool:
    def __init__(self, size: int, *, stage: str, metrics: Metrics, env: dict[str, str] | None = None,
                 initializer: str | None = None, classifier: str | None = None,
                 max_tasks_per_worker: int = 200, rss_limit_bytes: int = 0):
        """``initializer`` ("module:function") runs once per worker, to warm it;
        ``classifier`` ("module:function", called as f(exc, task_kwargs)) says
        whether a failure is transient, permanent or skipped. A worker still
        holding more than ``rss_limit_bytes`` (0: no limit) resident after a
        task is replaced before the next."""
        self.size = size
        self.stage = stage
        self.metrics = metrics
        self.env = dict(env or {})
        self.initializer = initializer
        self.classifier = classifier
        self.max_tasks = max_tasks_per_worker
        self.rss_limit = rss_limit_bytes
        self._ctx = mp.get_context("spawn")  # fork + jwst's threads is unsafe
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._free = size
        # Waiters for a worker, best priority first, FIFO within a priority.
        # Entries are [priority, sequence, event, granted].
        self._waiters: list[list] = []
        self._sequence = 0
        self._counter = 0
        self._closed = False

    @property
    def busy(self) -> int:
        return self.size - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def _acquire(self, priority: int) -> None:
        """A worker slot. Lower ``priority`` goes first: a live item that
        arrives while replayed items wait is served before all of them."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        self._sequence += 1
        entry = [priority, self._sequence, anyio.Event(), False]
        heapq.heappush(self._waiters, entry)
        try:
            await entry[2].wait()
        except BaseException:
            if entry[3]:
                self._release()  # handed a slot while being cancelled: pass it on
            else:
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise

    def _release(self) -> None:
        if self._waiters:
            entry = heapq.heappop(self._waiters)
            entry[3] = True
            entry[2].set()
        else:
            self._free += 1

    def start(self) -> None:
        """Spawn the workers; they warm up (import jwst) in parallel, off the loop."""
        for _ in range(self.size):
            self._idle.append(self._spawn())

    def _spawn(self) -> _Worker:
        self._counter += 1
        name = f"{self.stage}-{self._counter}"
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main, name=f"calstream-{name}", daemon=True,
            args=(child, self.env, self.initializer, self.classifier, self.max_tasks,
                  os.getpid()))
        proc.start()
        child.close()
        w = _Worker(name, proc, parent, self.max_tasks)
        self._all.append(w)
        return w

    def _replace(self, w: _Worker, cause: str) -> None:
        self._discard(w)
        if cause != "retired":
            self.metrics.worker_restarts.labels(stage=self.stage, cause=cause).inc()
        if not self._closed:
            self._idle.append(self._spawn())

    def _discard(self, w: _Worker) -> None:
        if w.process.is_alive():
            w.process.kill()
        w.process.join(timeout=5)
        w.conn.close()
        if w in self._all:
            self._all.remove(w)
        with contextlib.suppress(KeyError):  # a worker that never finished a task
            self.metrics.worker_rss.remove(self.stage, w.name)

    async def run(self, fn_path: str, kwargs: dict[str, Any], *, timeout: float,
                  log_path: str | None = None, env: dict[str, str] | None = None,
                  priority: int = 0) -> TaskOutcome:
        """Run fn(**kwargs) in a warm worker, its log (INFO and up) in ``log_path``,
        with ``env`` set for this task only.

        ``priority``: 0 for live work, higher for replayed work, which waits
        behind every live task. Raises WorkerLost if the worker died or overran
        ``timeout`` (it is killed); returns the task's own failures in the
        TaskOutcome."""
        await self._acquire(priority)
        try:
            w = self._idle.pop()
            try:
                outcome = await anyio.to_thread.run_sync(
                    self._exchange, w, (fn_path, kwargs, log_path, env or {}), timeout,
                    abandon_on_cancel=True)
            except WorkerLost as exc:
                self._replace(w, "timeout" if "timeout" in str(exc) else "died")
                raise
            except BaseException:
                # Cancelled mid-task (shutdown): the worker's state is unknown.
                self._replace(w, "cancelled")
                raise
            self.metrics.worker_rss.labels(stage=self.stage, worker=w.name).set(
                outcome.peak_rss_bytes)
            w.tasks_left -= 1
            if self.rss_limit and outcome.rss_bytes > self.rss_limit:
                # What a run leaves behind (caches, fragmentation) must not
                # pile up until the kernel's OOM killer takes a worker mid-run.
                log.warning("worker %s keeps %d MiB resident after its task (limit %d MiB): "
                            "replaced", w.name, outcome.rss_bytes >> 20, self.rss_limit >> 20)
                self._replace(w, "memory")
            elif w.tasks_left <= 0:
                self._replace(w, "retired")
            else:
                self._idle.append(w)
            return outcome
        finally:
            self._release()

    def _exchange(self, w: _Worker, request: tuple, timeout: float) -> TaskOutcome:
        """Blocking; runs in a thread."""
        try:
            w.conn.send(request)
        except (BrokenPipeError, OSError) as exc:
            raise WorkerLost(f"worker {w.name} died before the task: {exc}") from None
        start = time.monotonic()
        deadline = start + timeout
        while True:
            if w.conn.poll(0.2):
                try:
                    kind, *rest = w.conn.recv()
                except (EOFError, OSError):
                    raise WorkerLost(f"worker {w.name} died (exit code "
                                     f"{w.process.exitcode}) during the task") from None
                if kind == "ready":
                    w.ready = True
                    start = time.monotonic()  # the warm-up is not the task's time
                    deadline = start + timeout
                    continue
                wall = time.monotonic() - start
                if kind == "ok":
                    return TaskOutcome(value=rest[0], peak_rss_bytes=rest[1], worker=w.name,
                                       wall_seconds=wall, rss_bytes=rest[2])
                return TaskOutcome(failure=rest[0], peak_rss_bytes=rest[1], worker=w.name,
                                   wall_seconds=wall, rss_bytes=rest[2])
            if not w.process.is_alive() and not w.conn.poll(0):
                raise WorkerLost(f"worker {w.name} died (exit code {w.process.exitcode}) "
                                 "during the task")
            if time.monotonic() > deadline:
                w.process.kill()
                raise WorkerLost(f"worker {w.name} exceeded the task timeout of {timeout:.0f}s "
                                 "and was killed")

    def close(self) -> None:
        self._closed = True
        for w in list(self._all):
            try:
                w.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 3
        for w in list(self._all):
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            self._discard(w)
        self._idle.clear()
