"""The threads FileReads' calls run in (file_reads.py): daemon threads.

A read of a mount gone silent never returns, and its thread cannot be
stopped; file_reads.py leaves it waiting. anyio's worker threads are not
daemon threads: Python joins them as the process exits, so a daemon
stopped while one waited on a dead mount (or hashed a large file) did not
exit, and held its work directory's lock, until it was killed. These are
left behind at exit instead. Idle ones are kept for the next read; there
are never more than the reads running at once plus those left hung, which
file_reads.py bounds."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel


class ReadThreads:
    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job (or about to)

    async def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` in one of the threads; a cancelled caller abandons it."""
        job = self.start(fn)
        await job.done.wait()
        return job.outcome()

    def start(self, fn: Callable[[], Any]) -> ReadJob:
        """``fn()`` started in one of the threads (from the event loop's)."""
        job = ReadJob(fn, anyio.lowlevel.current_token())
        self._submit(job.run)
        return job

    def _submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # that one takes this job
        self._jobs.put(job)
        if start:
            threading.Thread(target=self._work, name=self.name, daemon=True).start()

    def _work(self) -> None:
        while True:
            self._jobs.get()()
            with self._lock:
                self._idle += 1


class ReadJob:
    """A call in a ReadThreads thread: ``done`` is set when it has returned."""

    def __init__(self, fn: Callable[[], Any], token: anyio.lowlevel.EventLoopToken) -> None:
        self.fn, self.token = fn, token
        self.done = anyio.Event()
        self._outcome: dict[str, Any] = {}

    def run(self) -> None:
        try:
            self._outcome["value"] = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
            self._outcome["error"] = exc
        try:
            anyio.from_thread.run_sync(self.done.set, token=self.token)
        except RuntimeError:  # its event loop has ended: nobody waits for it
            pass

    def outcome(self) -> Any:
        """What the call returned, or raised (once ``done``)."""
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["value"]
