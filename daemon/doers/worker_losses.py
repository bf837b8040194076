"""What a run in a worker comes to: its outcome, or how its worker was lost
(worker_pool.py raises these; work_item_runner.py judges them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calstream.daemon.doers.worker_process import TaskFailure


class WorkerLost(RuntimeError):
    """The worker process died or was killed; the task may be retried."""


class RunOverMemory(WorkerLost):
    """The run used more memory than a run may (``run_memory_bytes``) and its
    worker was killed: lost as a worker the OOM killer took, retried, then
    dead-lettered with this reason, but the container and every other run live on."""


class WorkerStopped(WorkerLost):
    """The run's worker was stopped (SIGSTOP, a frozen cgroup) for
    ``stopped_seconds`` and was killed (worker_stopped.py): lost as a worker
    that died, retried in another worker, not held until the time-out."""


class ServerLost(WorkerLost):
    """The worker died with the worker server it was forked from (PDEATHSIG):
    the daemon's fault, not the run's (work_item_runner: an infrastructure
    fault, which spends none of the item's attempts on a dead letter)."""


@dataclass
class TaskOutcome:
    value: Any = None
    failure: TaskFailure | None = None
    peak_rss_bytes: int = 0
    worker: str = ""
    wall_seconds: float = 0.0
    rss_bytes: int = 0  # resident after the task: what the worker keeps
    cores: int = 1  # the run was allowed this many (share_cores)
    cpu_seconds: tuple[float, float] = (0.0, 0.0)  # user, system: the task's, sealing included


def restart_cause(lost: WorkerLost) -> str:
    """The ``worker_restarts`` cause of a worker replaced for ``lost``."""
    if isinstance(lost, RunOverMemory):
        return "run_memory"
    if isinstance(lost, WorkerStopped):
        return "stopped"
    return "timeout" if "timeout" in str(lost) else "died"
