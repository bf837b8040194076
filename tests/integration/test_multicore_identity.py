"""One exposure calibrated with several cores (jwst's maximum_cores, stcal's
process pools started inside a warm worker) makes the same product bytes as
with one: why the choice of cores stays out of the work id
(deciders/core_sharing.py). Real jwst and CRDS, one small subarray, one warm
worker of the daemon's own pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.metrics import Metrics

pytestmark = pytest.mark.integration

TASK = "calstream.steps.detector1:run_detector1"


@pytest.mark.anyio
async def test_several_cores_make_the_same_products_as_one(kit, tmp_path):
    source = kit.uncal_files[0]
    pool = WorkerPool(1, stage="detector1", metrics=Metrics(), env=dict(kit.crds_env),
                      initializer="calstream.steps.worker_warmup:warm_up",
                      classifier="calstream.steps.failures:classify_task_failure")
    pool.start()
    runs = {}
    try:
        for cores in (1, 2):
            out, log = tmp_path / f"cores{cores}", tmp_path / f"cores{cores}.log"
            outcome = await pool.run(TASK, {"input_path": str(source), "output_dir": str(out)},
                                     timeout=600, log_path=str(log),
                                     share_cores=lambda free, waiting, n=cores: n)
            assert outcome.failure is None, outcome.failure
            assert outcome.cores == cores
            runs[cores] = (outcome.value, log.read_text())
    finally:
        pool.close()
    (one, one_log), (two, two_log) = runs[1], runs[2]
    # stcal really split the exposure over two processes, in both steps.
    assert "Creating 2 processes for jump detection" in two_log
    assert "Number of processors used for multiprocessing: 2" in two_log
    assert "Creating 2 processes" not in one_log
    # What the product event records as the run's parameters is unchanged.
    assert one["steps"] == two["steps"] == {}
    names = sorted(Path(p).name for p in one["outputs"])
    assert names == sorted(Path(p).name for p in two["outputs"]) and names
    compared = 0
    for name in names:
        with fits.open(tmp_path / "cores1" / name) as a, fits.open(tmp_path / "cores2" / name) as b:
            assert [h.name for h in a] == [h.name for h in b]
            for ha, hb in zip(a, b, strict=True):
                if ha.name == "ASDF" or ha.data is None:
                    continue  # the ASDF extension holds the run's dates
                da, db = np.asarray(ha.data), np.asarray(hb.data)
                assert da.dtype == db.dtype and da.shape == db.shape, f"{name}[{ha.name}]"
                assert da.tobytes() == db.tobytes(), f"{name}[{ha.name}] differs"
                compared += 1
    assert compared >= 4
