"""What a worker that dies with its answer half sent leaves (h36's check,
no defect found): the pipe's short read is a lost worker (WorkerLost, one
of the item's attempts, retried in a fresh worker), its outputs, whole or
cut off, go with its scratch directory, and nothing of it is published (the
commit marker is the daemon's to write, never a worker's). A guard, not a
fix. Real worker processes, real files (a tiny task)."""

import os

import anyio
import pytest

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from tests.recording_bus import RecordingBus

NAME = "jw01234001001_02101_00001_nrcb1"
TASKS = "tests.unit.test_lost_worker_leftovers"


def dies_mid_answer(output_dir=None, name=None):
    """The worker dies with its answer half sent: the length of a whole
    answer on the pipe, then a part of it, then the end of the process."""
    import gc
    import struct
    from multiprocessing.connection import Connection

    [conn] = [o for o in gc.get_objects() if isinstance(o, Connection) and not o.closed]
    conn._send(struct.pack("!i", 100_000) + b"\x80\x05" + b"\0" * 1000)
    if output_dir:  # an output written whole, another cut off
        with open(os.path.join(output_dir, f"{name}_rate.fits"), "wb") as f:
            f.write(b"SIMPLE" + b"\0" * 2874)
        with open(os.path.join(output_dir, f"{name}_rateints.fits"), "wb") as f:
            f.write(b"SIMP")
    os._exit(0)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def runner(tmp_path, pool, **cfg_values):
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    for key, value in cfg_values.items():
        setattr(cfg, key, value)
    metrics = pool.metrics
    return WorkItemRunner(cfg, publisher=RecordingBus(), store=ProductStore(cfg.products),
                          pool=pool, metrics=metrics, crds_context="jwst_0001.pmap")


def item(task, kwargs):
    return WorkItem(stage="detector1", pipeline="calwebb_detector1", task=task,
                    task_kwargs=kwargs, program="01234", observation="001", name=NAME,
                    inputs=[{"path": "/in/u.fits", "digest": "sha256:" + "0" * 64}],
                    event_fields={"exposure_id": NAME})


@pytest.mark.anyio
async def test_a_run_whose_worker_dies_mid_answer_is_retried_and_leaves_nothing(tmp_path):
    pool = WorkerPool(1, stage="detector1", metrics=Metrics())
    pool.start()
    run = runner(tmp_path, pool, max_attempts=2, retry_backoff=0.05)
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            await run.run(item(f"{TASKS}:dies_mid_answer", {"name": NAME}))
    finally:
        pool.close()
    [(topic, category, reason)] = run.publisher.sent  # each attempt lost: no product
    assert (topic, category) == ("deadletter", "retries_exhausted") and "died" in reason, reason
    products = run.store.directory("01234", "001")
    assert list((products / ".tmp").iterdir()) == []
    assert not list(products.glob("*.fits"))
