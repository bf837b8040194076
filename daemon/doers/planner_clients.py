"""The planner's Kafka clients, each started as a start step.

They are made on the planner's own loop (doers/planner_thread.py: aiokafka's
clients belong to the loop that started them): its producer, and the readers
of its restore and of its run. A broker that does not answer when the
planner starts -- or starts again after a compaction or an unreadable
snapshot -- is waited for as every other start step waits for it
(doers/start_waits.py: jittered retries, then parked in
``calstream_parked_items{stage="start"}``, named in /readyz, resumed by
itself); it is not an error that ends the planner's loop, and with it the
daemon. StartWaits.step is safe on that loop's thread: what it shares with
the daemon's loop is the wait /readyz shows (one reference, replaced whole),
thread-safe metrics, and the client loggers it quiets (under a lock).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Any

from calstream.daemon.doers import kafka
from calstream.daemon.doers.start_waits import StartWaits, broker_cause, started
from calstream.daemon.operations.config import Config

if TYPE_CHECKING:
    from calstream.daemon.doers.planner_loop import Planner


def _what(cfg: Config, client: str) -> str:
    return f"the broker {cfg.kafka_bootstrap} (the planner's {client})"


async def started_producer(cfg: Config, waits: StartWaits) -> Any:
    """The planner's own producer, started once the broker answers."""
    return await waits.step(_what(cfg, "producer"), partial(started, partial(kafka.producer, cfg)),
                            broker_cause)


@contextlib.asynccontextmanager
async def open_reader(planner: Planner, names: list[str]) -> AsyncIterator[kafka.TopicReader]:
    """kafka.open_reader on ``names`` from the planner's positions, opened
    (connected, the topics' partitions found and assigned) once the broker
    answers. A planner outside a daemon (a tool, a test) waits with its own
    StartWaits, shown in its metrics only."""
    waits = planner.start_waits or StartWaits(planner.cfg, planner.metrics)
    async with contextlib.AsyncExitStack() as stack:
        def attempt():  # a new reader each time: one that failed to open closed itself
            return stack.enter_async_context(
                kafka.open_reader(planner.cfg, names, start=planner.positions))
        yield await waits.step(_what(planner.cfg, "topic reader"), attempt, broker_cause)
