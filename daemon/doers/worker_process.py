"""What runs inside one warm worker process of the WorkerPool (worker_pool.py).

A worker is forked from a server process that imported the heavy modules
once (worker_forkserver.py; the initializer warms jwst if the server could
not), then serves one task at a time over a pipe: each request is
(function path, kwargs, log path, environment), each answer is ("ok", value,
peak RSS, RSS now, task CPU) or ("error", TaskFailure, peak RSS, RSS now,
task CPU). It returns
after ``max_tasks`` tasks: recycling bounds slow memory growth. A worker
idle for ``idle_return_seconds`` gives the heap its runs kept back to the
system (steps/worker_memory.py).

A task that writes into an ``output_dir`` and returns its ``outputs`` has
them sealed here (output_sealing.py), each file from the moment the task
closes it: each output is made durable (fsync) and its digest and size
go back with the value (``sealed``). The files are still in
the page cache, the worker's own process does it, and the daemon's main
process then only renames them into place.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import resource
import signal
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from calstream.daemon.doers.child_processes import (
    children_die_with_me,
    die_with_parent,
    lead_own_group,
)
from calstream.daemon.doers.output_sealing import sealing
from calstream.daemon.doers.process_memory import resident_in_use_bytes
from calstream.daemon.doers.worker_forkserver import server_pid
from calstream.daemon.operations import logs
from calstream.steps.environment import environ
from calstream.steps.failures import error_words
from calstream.steps.worker_memory import IDLE_RETURN_SECONDS, return_freed_memory
from calstream.steps.worker_warmup import freeze_survivors


@dataclass
class TaskFailure:
    error_type: str
    message: str
    classification: str  # transient | permanent | skipped | infrastructure:<cause>
    traceback: str = ""
    # What the fault lies in, as the classifier saw it ({path: stat signature}):
    # a parked run is tried again only once one of them changed.
    waits_on: dict[str, list[int] | None] = field(default_factory=dict)


def worker_main(conn: Connection, env: dict[str, str], initializer: str | None,
                classifier: str | None, max_tasks: int, parent_pid: int,
                idle_return_seconds: float = IDLE_RETURN_SECONDS, *,
                stdio: tuple = ()) -> None:
    # A SIGKILLed daemon must not leave workers calibrating for nobody: a
    # worker forked from the server dies with it, and the server with the
    # daemon (worker_server.py); a spawned one with the daemon.
    die_with_parent(server_pid() or parent_pid, signal.SIGKILL)
    # What its runs start ends with it: the pool kills its group once it ended.
    lead_own_group()
    _take_stdio(stdio)
    # The environment (CRDS_PATH, CRDS_CONTEXT, ...): all of it, the daemon's
    # as it is now (worker_lifecycle._spawn), since a forked worker holds the
    # server's. crds was imported in the server and read its server URL then;
    # each run's steps/crds_env.refresh_crds makes it follow this environment
    # (the URL re-read, its caches cleared) before crds is asked anything.
    os.environ.clear()
    os.environ.update(env)
    # A run given several cores (jwst's maximum_cores) starts stcal's process
    # pools from here: they must die with this worker as it dies with the daemon.
    children_die_with_me()
    signal.signal(signal.SIGTERM, _stop_now)
    _worker_logging()
    if initializer:
        _resolve(initializer)()
    # Called as classify(exc, task kwargs, the run's log path) inside the
    # except block, the exception's traceback intact: the failing steps on it
    # say which references the run read (steps/reference_integrity.py).
    # It returns the kind, or (kind, the files the fault lies in: TaskFailure.waits_on).
    classify = _resolve(classifier) if classifier else (lambda exc, task, log: "permanent")
    conn.send(("ready", os.getpid()))
    kept = False  # memory a run freed is held in the heap (steps/worker_memory.py)
    for _ in range(max_tasks):
        try:
            if kept and not _wait(conn, idle_return_seconds):
                return_freed_memory()  # idle: the next run may be hours away
                kept = False
            _wait(conn, None)
            request = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if request is None:
            return
        fn_path, kwargs, log_path, task_env = request
        kept = True
        started = _cpu_seconds()
        try:
            with _task_log(log_path), environ(task_env or {}), \
                    sealing(kwargs.get("output_dir")) as seal:
                value = seal(_resolve(fn_path)(**kwargs))
            conn.send(("ok", value, _peak_rss(), resident_in_use_bytes(), _cpu_since(started)))
        except BaseException as exc:  # noqa: BLE001 - report every failure to the parent
            try:
                # In the task's environment: its CRDS cache, its log context.
                with environ(task_env or {}):
                    kind, waits_on = _kind_and_files(classify(exc, kwargs, log_path))
            except Exception:  # a broken classifier must not hide the real error
                kind, waits_on = "permanent", {}
            # error_words: crds's fatal exit says what crds said, not "-1".
            conn.send(("error", TaskFailure(type(exc).__name__, error_words(exc)[:4000], kind,
                                            traceback.format_exc()[-8000:], waits_on),
                       _peak_rss(), resident_in_use_bytes(), _cpu_since(started)))
        # After the answer, so no product waits for it: what a worker's first
        # runs leave alive for good is frozen, not walked by every later run's
        # collections (steps/worker_warmup.py).
        freeze_survivors()
        logs.flush_floods()  # the summary of a flood of the pipelines' warnings


def _wait(conn: Connection, seconds: float | None) -> bool:
    """Whether a request came within ``seconds`` (None: however long it
    takes); meanwhile the flood summaries owed are written as their windows
    end. An idle worker has no next line or task to bring them: a flood in
    the night's last run kept its "suppressed N" unsaid until the worker's end."""
    end = math.inf if seconds is None else time.monotonic() + seconds
    while True:
        left, due = end - time.monotonic(), logs.floods_due_in()
        wait = min(left, due)
        if conn.poll(None if wait == math.inf else max(0.0, wait)):
            return True
        if left <= due:
            return False
        logs.flush_floods()


def _take_stdio(stdio: tuple) -> None:
    """The daemon's stdout and stderr as they are now (reduction.DupFd), in
    place of those the server had at its start."""
    for target, dup in stdio:
        fd = dup.detach()
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)


def _kind_and_files(classified) -> tuple[str, dict]:
    if isinstance(classified, tuple):
        return classified[0], dict(classified[1])
    return classified, {}


def _stop_now(signum, frame) -> None:
    """SIGTERM: the pool ends this worker mid-task (a cancelled or timed-out
    run). multiprocessing's exit hooks run first, as on a normal return: they
    unlink the named semaphores this process made (crds makes one at import)
    and end stcal's pool processes; os._exit then skips everything else (the
    run's state is of no use)."""
    from multiprocessing import util

    util._exit_function()
    os._exit(128 + signum)


def _resolve(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _cpu_seconds() -> tuple[float, float]:
    """User and system CPU of this worker and of the children it has waited
    for (stcal's pool processes when a run is given several cores)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + kids.ru_utime, own.ru_stime + kids.ru_stime


def _cpu_since(started: tuple[float, float]) -> tuple[float, float]:
    """What a task cost in CPU (its sealing included): beside its wall time,
    it says whether a run waited (I/O, a busy machine) or worked."""
    user, system = _cpu_seconds()
    return max(0.0, user - started[0]), max(0.0, system - started[1])


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _worker_logging() -> None:
    """Warnings and errors to stderr (the daemon's log, in its format: see
    logs.worker_setup); each task's full log goes to its own file (see _task_log)."""
    logs.worker_setup()
    # Python warnings from the pipelines belong in the run's log, not on stderr.
    logging.captureWarnings(True)
    # The summaries the log still owes when the worker ends: multiprocessing's
    # exit hooks run on a return and on SIGTERM alike (atexit's do not). Not
    # blocking: SIGTERM's handler may interrupt a line that holds the lock.
    from multiprocessing import util

    util.Finalize(None, logs.flush_floods, kwargs={"all_of_them": True, "blocking": False},
                  exitpriority=10)


@contextlib.contextmanager
def _task_log(path: str | None):
    """The task's log records, and what its libraries print, go to ``path``.

    Printed output too: crds prints a whole traceback to stderr for every
    reference lookup that misses its cache (``traceback.print_exc``), some
    1,500 lines a run, and a run parked on such a fault is tried again every
    half minute: on the daemon's stderr that was ~3,000 lines a minute, all
    night. The daemon's log keeps its own line about the failure; this
    worker's warnings and errors still reach it (their handler holds the
    real stderr)."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", errors="backslashreplace", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        # Its own format, escaped and bounded as the daemon's lines are: the
        # pipelines quote header values, and a header is as untrusted as a name.
        handler.setFormatter(logs.TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                                None))
        logging.getLogger().addHandler(handler)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        finally:
            logging.getLogger().removeHandler(handler)
