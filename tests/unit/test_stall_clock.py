"""An item's stall clock and the worker pool: real worker processes, tiny
tasks, the consumer's own bookkeeping (no broker: only the stall judgement
and the handing of records to tasks are exercised)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.kafka import ConcurrentConsumer
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from tests.recording_bus import RecordingBus


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _until(condition, seconds: float = 30.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_an_item_that_waited_for_a_worker_is_judged_from_its_runs_start(tmp_path: Path):
    """A stage keeps one waiting item per worker in flight: taken while the
    worker runs, it waits behind a run of up to task_timeout, then its own
    run may take as long. Its clock starts again when its run begins: before,
    the wait counted, and two legitimate 40-minute spec2 runs in a row made
    the waiting one 'stalled' at 75 minutes (stall_seconds 4500: unready,
    CalstreamConsumerStalled). While it waits it is still judged from when it
    was taken (a pool whose workers never free up is a stall)."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work"})
    metrics = Metrics()
    pool = WorkerPool(1, stage="detector1", metrics=metrics)
    pool.start()
    await pool.fill()
    runner = WorkItemRunner(cfg, publisher=RecordingBus(encode=True),
                            store=ProductStore(cfg.products), pool=pool, metrics=metrics,
                            crds_context="jwst_0001.pmap")

    async def handler(record) -> None:  # the stage's runner, as RecordAdmitter hands it over
        name = f"jw01234001001_02101_0000{record.offset + 1}_nrcb1"
        await runner.run(WorkItem(
            stage="detector1", pipeline="calwebb_detector1", task="tests.pool_tasks:mark_then_wait",
            task_kwargs=record.value, program="01234", observation="001", name=name,
            inputs=[{"path": f"/in/{name}_uncal.fits", "digest": f"sha256:{record.offset:064d}"}],
            event_fields={"exposure_id": name}))

    limit = 60.0
    # A client never started (no broker is asked): its pause bookkeeping only.
    c = ConcurrentConsumer(AIOKafkaConsumer(), stage="detector1", handler=handler, capacity=2,
                           metrics=Metrics(), topics=["raw"], stall_seconds=limit)
    tp = TopicPartition("raw", 0)
    runs = {n: {"mark": str(tmp_path / f"{n}.running"), "gate": str(tmp_path / f"{n}.gate")}
            for n in ("first", "second")}
    records = [SimpleNamespace(offset=i, value=runs[n]) for i, n in enumerate(runs)]
    try:
        async with anyio.create_task_group() as tg:
            c._start(tg, {tp: records})  # both taken: one runs, the other waits

            def began(n: str) -> bool:
                return Path(runs[n]["mark"]).exists()

            # Either may get the worker first (two tasks started at once).
            await _until(lambda: (began("first") or began("second")) and pool.waiting == 1)
            running = "first" if began("first") else "second"
            waiting = "second" if running == "first" else "first"
            serial = dict(zip(runs, sorted(c.started_at), strict=True))  # taken in order
            # The waiting one has waited an hour behind the other (its clock: the take).
            c.started_at[serial[waiting]] = time.monotonic() - 3600
            assert "in flight and none finished in time" in c.stalled(limit)
            Path(runs[running]["gate"]).touch()  # that run ends; the waiting one's begins
            await _until(lambda: began(waiting) and c.in_flight == 1)
            # Its run has just begun: no stall (its hour of waiting was none).
            await _until(lambda: c.stalled(limit) is None, seconds=10.0)
            assert list(c.started_at) == [serial[waiting]]
            Path(runs[waiting]["gate"]).touch()
        assert c.in_flight == 0 and c.finished == 2
    finally:
        pool.close()
        await c.consumer.stop()  # never started: closes nothing but itself
