"""calstream_parked_items{root}: the disk to free, from the configuration's
few roots, never a value a record chose. A replayed arrival names its
namespace (any name of the grammar: anyone who may write the replay topic
chooses it), and a run of it parked on a full disk was labelled with its
namespace's tree: a new series per namespace, kept for the daemon's life.
Real worker processes (tiny tasks, no jwst)."""

import anyio
import pytest

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from tests.recording_bus import RecordingBus


@pytest.fixture
def anyio_backend():
    return "asyncio"


    async def dead_letter(self, **fields):
        raise AssertionError(f"a full disk is no dead letter: {fields}")


def _parked(metrics: Metrics) -> list[dict[str, str]]:
    return [s.labels for family in metrics.registry.collect() for s in family.samples
            if s.name == "calstream_parked_items" and s.value > 0]


@pytest.mark.anyio
async def test_runs_of_forged_namespaces_parked_on_a_full_disk_share_the_stores_label(tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "max_attempts": 1,
                                    "retry_backoff": 0.01})
    metrics, store = Metrics(), ProductStore(cfg.products)
    pool = WorkerPool(1, stage="detector1", metrics=metrics,
                      classifier="tests.pool_tasks:classify_disk")
    pool.start()
    runner = WorkItemRunner(cfg, publisher=RecordingBus(), store=store, pool=pool, metrics=metrics,
                            crds_context="jwst_0001.pmap")
    items = [WorkItem(stage="detector1", pipeline="calwebb_detector1",
                      task="tests.pool_tasks:disk_full", task_kwargs={"name": name},
                      program="01234", observation="001", name=name,
                      inputs=[{"path": "/in/u.fits", "digest": "sha256:" + f"{i}" * 64}],
                      event_fields={"exposure_id": name}, namespace=f"forged-{i}",
                      crds_context="jwst_0001.pmap", priority="replay",
                      replay={"replay_id": f"r{i}", "namespace": f"forged-{i}"})
             for i, name in enumerate(f"jw01234001001_02101_0000{k}_nrcb1" for k in (1, 2))]
    try:
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(runner.run, item)
            with anyio.fail_after(60):
                while sum(s.value for f in metrics.parked.collect() for s in f.samples) < 2:
                    await anyio.sleep(0.05)  # both runs parked
            parked = _parked(metrics)
            tg.cancel_scope.cancel()
    finally:
        pool.close()
    assert parked == [{"stage": "detector1", "cause": "disk_full", "root": str(cfg.products)}]
