"""Warm worker processes that run calibration off the event loop.

Why not concurrent.futures.ProcessPoolExecutor: one dead worker breaks the
whole executor, a hung task cannot be killed on its own, and it reports nothing
about memory. Here each worker is a process (worker_process.py) forked from
a server that imported the heavy modules (jwst) once (worker_forkserver.py),
runs one task at a time, and reports its
peak memory and CPU with every result; a worker that dies or overruns its timeout is
replaced and the task fails as *transient*, so the caller retries it. Turns at
the workers are handed out by priority (priority_slots.py).

A worker's next task starts from the thread that gets its result (``_hand_over``),
so a busy event loop leaves no worker idle between two runs (docs/design.md).

The stage's consumer keeps ``capacity`` items in flight (``prefetch`` more
than workers): the next items are admitted (headers read, digests checked)
while the workers calibrate and wait here, so a finished worker starts at once.

Workers are not daemonic processes: multiprocessing forbids those children,
and a run given several cores (``share_cores``: jwst's maximum_cores) starts
stcal's process pools. Their lifetime is the pool's: close() ends them, an
exit hook kills what is left, and each worker dies with the daemon (PDEATHSIG,
also in its children: child_processes.children_die_with_me). A worker is asked
to end before it is killed (worker_lifecycle.py), so shutdown leaves nothing to
multiprocessing's resource tracker (tests/unit/test_pool_shutdown.py).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio

from calstream.daemon.doers.parking import Parking
from calstream.daemon.doers.priority_slots import DECLINED, PrioritySlots
from calstream.daemon.doers.process_memory import oom_kills
from calstream.daemon.doers.run_memory import died_words, over_bound
from calstream.daemon.doers.worker_answers import received
from calstream.daemon.doers.worker_forkserver import worker_context
from calstream.daemon.doers.worker_lifecycle import Worker, WorkerLifecycle, kill_left_over
from calstream.daemon.doers.worker_losses import (
    RunOverMemory,
    ServerLost,
    TaskOutcome,
    WorkerLost,
    WorkerStopped,
    restart_cause,
)
from calstream.daemon.doers.worker_process import TaskFailure
from calstream.daemon.doers.worker_server_watch import SERVER_HUNG_SECONDS, server_serving
from calstream.daemon.doers.worker_stopped import STOPPED_SECONDS, stopped_too_long
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.failures import error_text
from calstream.steps.worker_memory import IDLE_RETURN_SECONDS

__all__ = ["RunOverMemory", "ServerLost", "TaskFailure", "TaskOutcome", "WorkerLost",
           "WorkerPool", "WorkerStopped"]

log = logging.getLogger("calstream.pool")

# Items waiting for each worker besides the one it runs: one is enough to
# leave no gap, and more would only lengthen what a revoked partition hands back.
PREFETCH_PER_WORKER = 1

@dataclass
class _Request:
    """A task on its way to a worker, and what became of it (see _hand_over)."""
    message: tuple  # (fn path, kwargs, log path, environment), as the worker reads it
    still_needed: Callable[[], bool] | None = None
    share_cores: Callable[[int, int], int] | None = None
    worker: Worker | None = None  # set once it is sent
    cores: int = 1  # the run was allowed (share_cores)
    sent_at: float = 0.0
    send_error: BaseException | None = None
    handed_on: bool = False  # its worker and slot went to the next task (_hand_over)
    abandoned: bool = False  # its caller was cancelled: hand nothing on
    children: list[int] = field(default_factory=list)  # its worker's, at the last scan
    children_scanned_at: float = float("-inf")  # monotonic
    stop: Any = None  # its worker seen stopped (deciders/work_stops.Stop), or None
    oom_kills: int | None = None  # its cgroup's, as it was sent (process_memory.oom_kills)


class WorkerPool(WorkerLifecycle):
    def __init__(self, size: int, *, stage: str, metrics: Metrics, env: dict[str, str] | None = None,
                 initializer: str | None = None, classifier: str | None = None,
                 max_tasks_per_worker: int = 200, rss_limit_bytes: int = 0,
                 run_memory_bytes: int = 0,
                 prefetch: int = PREFETCH_PER_WORKER, idle_return_seconds: float = IDLE_RETURN_SECONDS,
                 faults: Config | None = None,
                 server_hung_seconds: float = SERVER_HUNG_SECONDS,
                 stopped_seconds: float = STOPPED_SECONDS):
        """``initializer`` ("module:function") runs once per worker, to warm it;
        ``classifier`` ("module:function", f(exc, task_kwargs, log_path)) says
        whether a failure is transient, permanent or skipped. A worker still
        holding more than ``rss_limit_bytes`` (0: no limit) resident after a
        task is replaced before the next; a run whose worker (and its
        children) holds more than ``run_memory_bytes`` (0: no bound) while
        it goes is killed at once (RunOverMemory); one idle ``idle_return_seconds``
        returns the memory its runs freed (worker_process.py). A worker's
        start that fails is retried and parked as ``faults`` says
        (``max_attempts``, ``retry_backoff``, ``park_recheck_seconds``); a
        worker server that uses no CPU for ``server_hung_seconds`` while a
        start waits is killed (worker_server_watch.py); a run stopped
        (SIGSTOP, a frozen cgroup) for ``stopped_seconds`` (0: never) is
        killed and lost (WorkerStopped: worker_stopped.py)."""
        self.size = size
        self.stage = stage
        self.metrics = metrics
        self.env = dict(env or {})
        self.initializer = initializer
        self.classifier = classifier
        self.max_tasks = max_tasks_per_worker
        self.rss_limit = rss_limit_bytes
        self.run_memory = run_memory_bytes
        self.prefetch = prefetch
        self.idle_return_seconds = idle_return_seconds
        self._ctx = worker_context()  # forks of a warm server (worker_forkserver.py)
        self._idle: list[Worker] = []
        self._all: list[Worker] = []
        self._slots = PrioritySlots(size)
        self._counter = 0
        self._closed = False
        self._owed = 0  # workers to start before the next run (fill)
        self._filling = anyio.Lock()  # one fill at a time
        self._starting = None  # the start under way in the starter thread (a Future)
        self._lock = threading.Lock()  # close() against a start that ends in a thread
        self.server_hung_seconds = server_hung_seconds
        self.stopped_seconds = stopped_seconds
        self._start_faults = Parking(faults or Config(), metrics, stage=stage,
                                     what=f"{stage}: starting a worker")
        self._ending: list[threading.Thread] = []  # see _end
        # Not daemonic: without this, an exit that skipped close() would hang
        # in multiprocessing's own exit hook, joining workers that wait for work.
        atexit.register(kill_left_over, weakref.ref(self))

    @property
    def busy(self) -> int:
        return self._slots.busy

    @property
    def waiting(self) -> int:
        return self._slots.waiting

    @property
    def free_cores(self) -> int:
        """Cores (one per worker) that no run is using now."""
        return self.size - sum(w.cores for w in self._all)

    @property
    def capacity(self) -> int:
        """How many items the stage's consumer keeps in flight."""
        return self.size * (1 + self.prefetch)

    @property
    def workers_started(self) -> int:
        """Worker processes now running (0 before a lazy pool's first run)."""
        return len(self._all)

    async def run(self, fn_path: str, kwargs: dict[str, Any], *, timeout: float,
                  log_path: str | None = None, env: dict[str, str] | None = None,
                  priority: int = 0,
                  still_needed: Callable[[], bool] | None = None,
                  share_cores: Callable[[int, int], int] | None = None,
                  started: Callable[[], None] | None = None) -> TaskOutcome | None:
        """Run fn(**kwargs) in a warm worker, its log (INFO and up) in ``log_path``,
        with ``env`` set for this task only.

        ``priority``: 0 for live work, higher for replayed work, which waits
        behind every live task. ``still_needed`` is asked (in a thread) the
        moment a worker is ours, if the task had to wait for one: False (done
        meanwhile, elsewhere) gives the turn back and returns None. Raises WorkerLost if the worker died or overran ``timeout`` (it
        is killed); returns the task's own failures in the TaskOutcome.

        ``share_cores(free cores, items waiting)``, asked once a worker is
        ours, gives the cores this run may use, passed to the task as
        ``cores`` (deciders/core_sharing.py); the outcome says how many.
        ``started()`` is called (on the event loop) once the turn at a worker
        is the task's: the end of its wait (a stall clock starts again there)."""
        # Asked only of an item that had to wait: one that gets a worker at
        # once was found not done a moment ago (a thread trip and a store
        # lookup less on an idle daemon's path; issue 15).
        queued = self._slots.busy >= self.size or self._slots.waiting > 0
        request = _Request((fn_path, kwargs, log_path, env or {}), still_needed, share_cores)
        try:
            waiter = await self._slots.acquire(priority, request)
        except BaseException:
            if request.worker is not None:  # started by a hand-over, then cancelled
                self._replace(request.worker, "cancelled")
                self._slots.release()
            raise
        if waiter is not None and waiter.state == DECLINED:
            return None  # the hand-over found it done meanwhile
        if started is not None:
            started()
        handed_on = False
        try:
            if request.worker is None:  # not started by a hand-over: start it here
                if queued and still_needed is not None and not await anyio.to_thread.run_sync(
                        still_needed):
                    return None
                w = await self._idle_worker()
                self._plan(request, w)
                request.worker, w.cores = w, request.cores
            w = request.worker
            try:
                outcome = await anyio.to_thread.run_sync(
                    self._exchange, request, timeout, abandon_on_cancel=True)
                outcome.cores = request.cores  # w.cores may be the next task's already
                handed_on = request.handed_on
            except (RunOverMemory, WorkerStopped) as exc:
                self._replace(w, restart_cause(exc))
                raise
            except WorkerLost as exc:
                self._replace(w, restart_cause(exc))
                if "timeout" not in str(exc) and not server_serving(w.server):
                    raise ServerLost(f"{exc}, with the worker server {w.server} it was "
                                     "forked from") from exc
                raise
            except BaseException:
                # Cancelled mid-task (shutdown): the worker's state is unknown,
                # unless it already runs the next task (then that task's caller has it).
                with self._slots.lock:
                    request.abandoned = True
                    handed_on = request.handed_on
                if not handed_on:
                    self._replace(w, "cancelled")
                raise
            finally:
                if not handed_on:
                    w.cores = 0
            self.metrics.worker_rss.labels(stage=self.stage, worker=w.name).set(
                outcome.peak_rss_bytes)
            for mode, seconds in zip(("user", "system"), outcome.cpu_seconds, strict=True):
                self.metrics.worker_cpu.labels(stage=self.stage, mode=mode).inc(seconds)
            if handed_on:  # the worker runs the next task, whose caller has it now
                return outcome
            if w.lost is not None:  # killed by the checks as its answer came (_exchange)
                self._replace(w, restart_cause(w.lost))
            elif self._over_memory(outcome):
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
            if not handed_on:
                self._slots.release()

    async def _idle_worker(self) -> Worker:
        """An idle worker for a run that holds a turn; the owed ones are
        started (off the loop) when none is idle: a start that waits (a new
        server's import) or is parked (EMFILE) holds up no run a live worker
        could take. One that died idle (with its server, most often) is
        replaced, not handed the task: the task would fail for it."""
        while True:
            if not self._idle:
                await self.fill()
            w = self._idle.pop()
            if w.process.is_alive():
                return w
            self._replace(w, "died")

    def _over_memory(self, outcome: TaskOutcome) -> bool:
        return 0 < self.rss_limit < outcome.rss_bytes

    def _plan(self, request: _Request, w: Worker) -> None:
        """The cores of ``request``'s run on ``w`` (share_cores, asked the
        moment ``w`` is the run's, counting ``w``'s cores as free)."""
        request.cores = 1
        if request.share_cores is not None:
            free = self.size - sum(other.cores for other in self._all if other is not w)
            request.cores = max(1, request.share_cores(free, self.waiting))
            fn_path, kwargs, log_path, env = request.message
            request.message = (fn_path, {**kwargs, "cores": request.cores}, log_path, env)

    def _send(self, request: _Request) -> None:
        """Never raises (it may run under the slots' lock): _exchange raises the error."""
        request.sent_at = time.monotonic()
        try:
            request.worker.conn.send(request.message)
        except Exception as exc:  # noqa: BLE001 - a dead worker's pipe, or kwargs that do not pickle
            request.send_error = exc

    def _hand_over(self, done: _Request, outcome: TaskOutcome) -> None:
        """In the thread that just got ``done``'s result: start the best waiting
        task on the same worker (priority_slots.hand_over), if the worker is
        to be kept (the checks run() makes on the loop are made here first)."""
        w = done.worker
        if w.lost is not None or w.tasks_left <= 0 or self._over_memory(outcome):
            return

        def check(request: _Request) -> bool:
            if request.still_needed is not None and not request.still_needed():
                return False
            self._plan(request, w)  # outside the lock too: an error puts it back in line
            return True

        def start(request: _Request) -> None:  # under the slots' lock: raises nothing
            request.worker, w.cores = w, request.cores
            self._send(request)
            done.handed_on = True

        self._slots.hand_over(check, start, go_on=lambda: not (self._closed or done.abandoned))

    def _exchange(self, request: _Request, timeout: float) -> TaskOutcome:
        """Blocking; runs in a thread. Sends the request unless a hand-over did."""
        w = request.worker
        if not request.sent_at:
            self._send(request)
        if isinstance(request.send_error, OSError):
            raise WorkerLost(f"worker {w.name} died before the task: {request.send_error}")
        if request.send_error is not None:
            raise request.send_error
        start = request.sent_at
        request.oom_kills = oom_kills()  # a death while this rises: the OOM killer's
        deadline = start + timeout
        while True:
            if w.conn.poll(0.2):
                try:
                    kind, *rest = received(w.conn, partial(self._run_ends, w, request,
                                                           deadline, timeout, kill=True))
                except WorkerLost:
                    raise
                except (EOFError, OSError):
                    raise WorkerLost(died_words(w.process, w.name, request.oom_kills)) from None
                except Exception as exc:  # noqa: BLE001 - the answer came, whole
                    # An answer this process cannot rebuild (an object of a
                    # class only the worker has): the task's fault, the same
                    # at every attempt, not the daemon's (raised, the stage
                    # consumer ran the item again for as long as it ran).
                    kind, rest = "error", [TaskFailure(
                        type(exc).__name__, f"its answer cannot be read: {error_text(exc)}",
                        "permanent"), 0, 0, (0.0, 0.0)]
                if kind == "ready" and w.lost is not None:
                    raise w.lost  # killed as it said it was warm: the run never began
                if kind == "ready":
                    w.ready = True
                    start = time.monotonic()  # the warm-up is not the task's time
                    deadline = start + timeout
                    continue
                wall = time.monotonic() - start
                w.tasks_left -= 1  # here: the next task may start before the loop sees this
                outcome = TaskOutcome(peak_rss_bytes=rest[1], worker=w.name,
                                      wall_seconds=wall, rss_bytes=rest[2], cpu_seconds=rest[3])
                outcome.value, outcome.failure = (rest[0], None) if kind == "ok" else (None, rest[0])
                if w.lost is not None:
                    # Killed by the watch as its answer came whole: the run
                    # finished (its outputs sealed before it answered) and
                    # counts; its worker is replaced (run), handed nothing.
                    log.warning("%s; its answer had come whole and counts; the worker is "
                                "replaced", w.lost)
                self._hand_over(request, outcome)
                return outcome
            if not w.process.is_alive() and not w.conn.poll(0):
                raise WorkerLost(died_words(w.process, w.name, request.oom_kills))
            if (ended := self._run_ends(w, request, deadline, timeout)) is not None:
                raise ended

    def _run_ends(self, w: Worker, request: _Request, deadline: float, timeout: float, *,
                  kill: bool = False) -> WorkerLost | None:
        """Why a run ends now, or None; asked between two polls of its pipe
        and, with ``kill``, while its answer is read (worker_answers.py: the
        worker killed, its end of the pipe closes and the read ends). Kept as
        ``w.lost``: a read may still end well, and a worker killed as its
        answer came whole is replaced, never kept or handed a run. Past
        its time-out (_replace ends it: SIGTERM, then SIGKILL); over its
        memory bound (run_memory.py says why and how its children count) or
        stopped for ``stopped_seconds`` (worker_stopped.py): killed at once."""
        if time.monotonic() > deadline:
            if kill:
                with contextlib.suppress(OSError, ValueError):
                    w.process.kill()
            w.lost = WorkerLost(f"worker {w.name} exceeded the task timeout of {timeout:.0f}s "
                                "and was killed")
        elif self.run_memory and (over := over_bound(
                w.process, w.name, self.run_memory * max(1, request.cores), request)):
            w.lost = RunOverMemory(over)
        elif self.stopped_seconds > 0 and (stopped := stopped_too_long(
                w.process, w.name, request, self.stopped_seconds)):
            w.lost = WorkerStopped(stopped)
        return w.lost
