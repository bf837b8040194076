"""Running the planner on an event loop of its own, in a thread of its own.

The planner's decisions are CPU work between awaits (a large program costs
seconds per batch of events); on the daemon's shared event loop that time is
taken from the inbox watcher, the stage consumers' polls and heartbeats, and
the liveness beat. On its own loop, in its own thread, the planner competes
only for the interpreter lock, which Python hands over every few milliseconds
(``sys.getswitchinterval``): the shared loop may run slower, never stop.

The planner's loop has its own Kafka clients (aiokafka's are bound to the
loop that started them): its own producer, readers and publisher, made by
``make_publisher`` on that loop.

Why a thread and not a process: the planner's status (/planner, /readyz) and
metrics are served by the daemon's operations endpoint from the same objects,
and the single-process embedded default keeps one process. A deployment that
wants the planner alone runs ``calstream run --role planner`` (deploy/k8s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, Future

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

log = logging.getLogger("calstream.planner")

TaskFunction = Callable[..., Awaitable[None]]


class OwnLoop:
    """A task function run on a new event loop in a thread named ``name``.

    ``run`` behaves as the function would in the caller's task group: it
    reports started when the function does, raises what the function raises,
    and a cancelled caller cancels the function (and waits for it to end).
    """

    def __init__(self, name: str):
        self.name = name
        self.heartbeat: float | None = None  # written by the loop's own beat

    async def _beat(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            await anyio.sleep(1.0)

    async def _main(self, func: TaskFunction, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._beat)
            await tg.start(func)
            task_status.started()
            # The function's end (or failure) ends the loop: the beat stops too.
            await anyio.sleep_forever()

    async def run(self, func: TaskFunction, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        context = start_blocking_portal(name=self.name)
        portal: BlockingPortal = await anyio.to_thread.run_sync(context.__enter__)
        future: Future | None = None
        try:
            future, _ = await anyio.to_thread.run_sync(
                portal.start_task, self._main, func, abandon_on_cancel=True)
            task_status.started()
            await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_stop, portal, context)
        if future is not None and future.done() and not future.cancelled():
            future.result()  # the function's own failure, if any


def _stop(portal: BlockingPortal, context) -> None:
    """Cancel what still runs on the loop, then end the loop and its thread."""
    try:
        portal.call(portal.stop, True)
    except (RuntimeError, CancelledError):
        pass  # the loop had already ended
    try:
        context.__exit__(None, None, None)
    except (RuntimeError, CancelledError) as exc:
        log.debug("%s: loop ended with %r", "planner", exc)


def stale_for(loop: OwnLoop | None) -> float:
    """Seconds since the loop last beat (0 before it started, or without one)."""
    if loop is None or loop.heartbeat is None:
        return 0.0
    return time.monotonic() - loop.heartbeat
