"""Whether the worker server is hung, judged while a worker's start waits for it (pure).

A start waits for the server to fork the worker and send its pid. A new
server forks nothing before it has imported jwst: seconds of CPU on an idle
machine, minutes of wall time under a heavy load. So the time a start waits
says nothing; what the server does meanwhile does. A server that used no
CPU at all for ``hung_seconds`` while a start waited for it is stopped
(SIGSTOP), blocked in the kernel (D state) or deadlocked asleep: a loaded
machine still gives a runnable process some CPU every few seconds, and a
healthy server with a request in front of it is runnable. The clock ticks
(utime + stime) are read by the caller (doers/worker_server_watch.py); a
server that was started again meanwhile (another pid) is judged afresh.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HangJudge:
    hung_seconds: float
    pid: int | None = None
    ticks: int | None = None
    since: float = 0.0  # when the server last showed progress (or was first seen)

    def hung(self, now: float, pid: int | None, ticks: int | None) -> bool:
        """One look at the server (``ticks`` None: not readable, taken as
        progress: nothing is killed on a guess)."""
        if pid is None or ticks is None or pid != self.pid or ticks != self.ticks:
            self.pid, self.ticks, self.since = pid, ticks, now
            return False
        return now - self.since >= self.hung_seconds
