"""Previews wait while calibrations are in flight in their pool, at most
preview_max_wait seconds (issue 15: a picture must not share the cores with
a product while there is calibration work). The gate alone on an event loop,
then real worker processes drawing a real preview beside a stand-in
calibration that holds its worker until the test opens a file."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers.preview_gate import PreviewGate
from calstream.daemon.doers.preview_runner import make_previews
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.previews.naming import planned_previews
from tests.unit.test_previews import ROOT, _image
from tests.unit.test_runner_recheck import _runner_and_item

# What a product's previews are drawn with (the runner's item.log_context).
CONTEXT = {"exposure_id": ROOT, "stage": "detector1", "work_id": "0" * 64}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _waiting(metrics: Metrics, stage: str = "detector1") -> float | None:
    return metrics.registry.get_sample_value("calstream_previews_waiting", {"stage": stage})


async def _until(condition, timeout: float = 120.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


# -- the gate alone ---------------------------------------------------------

@pytest.mark.anyio
async def test_a_preview_waits_until_no_calibration_is_in_flight():
    metrics = Metrics()
    gate = PreviewGate(max_wait=600, metrics=metrics, stage="detector1")
    assert await gate.until_no_calibration()  # nothing in flight: no wait
    answers = []

    async def preview():
        answers.append(await gate.until_no_calibration())

    async with anyio.create_task_group() as tg:
        with gate.calibrating():
            with gate.calibrating():
                tg.start_soon(preview)
                await anyio.wait_all_tasks_blocked()
                assert _waiting(metrics) == 1
            await anyio.wait_all_tasks_blocked()
            assert answers == []  # one calibration still in flight
            # Another starts before the waiting preview has looked again: it waits on.
        with gate.calibrating():
            await anyio.wait_all_tasks_blocked()
            assert answers == [] and _waiting(metrics) == 1
    assert answers == [True] and _waiting(metrics) == 0 and gate.calibrations == 0


@pytest.mark.anyio
async def test_a_parked_item_waiting_for_its_turn_does_not_hold_previews_back():
    metrics = Metrics()
    gate = PreviewGate(max_wait=600, metrics=metrics, stage="detector1")
    answers = []

    async def preview():
        answers.append(await gate.until_no_calibration())

    async with anyio.create_task_group() as tg:
        with gate.calibrating():  # the item's whole way through its runner
            tg.start_soon(preview)
            await anyio.wait_all_tasks_blocked()
            assert answers == []  # its first attempt: previews wait
            with gate.idle():  # parked, waiting for its turn at the gate
                await anyio.wait_all_tasks_blocked()
                assert answers == [True]
                assert await gate.until_no_calibration()  # a later one does not wait either
            assert gate.calibrations == 1  # its probe: counted again
    assert gate.calibrations == 0


@pytest.mark.anyio
async def test_a_preview_waits_at_most_max_wait_and_not_at_all_with_0():
    metrics = Metrics()
    bounded = PreviewGate(max_wait=0.2, metrics=metrics, stage="detector1")
    with bounded.calibrating():
        with anyio.fail_after(120):
            assert await bounded.until_no_calibration() is False
        assert _waiting(metrics) == 0
    off = PreviewGate(max_wait=0, metrics=metrics, stage="stage2")
    with off.calibrating():
        assert await off.until_no_calibration() is False
    assert _waiting(metrics, "stage2") is None  # it never waited


@pytest.mark.anyio
async def test_a_waiting_preview_does_not_delay_a_stop(tmp_path):
    """Cancelled with its task group (the stage's, at a stop), at once: never
    after preview_max_wait. The pool is never asked."""
    metrics = Metrics()
    pool = WorkerPool(1, stage="detector1", metrics=metrics)  # never started: never asked
    gate = PreviewGate(max_wait=3600, metrics=metrics, stage="detector1")
    planned = planned_previews([_image(tmp_path / f"{ROOT}_rate.fits", (32, 32))])
    with anyio.fail_after(120), gate.calibrating():
        async with anyio.create_task_group() as tg:
            tg.start_soon(make_previews, pool, planned, CONTEXT, gate)
            await _until(lambda: _waiting(metrics) == 1)
            tg.cancel_scope.cancel()
    assert _waiting(metrics) == 0 and not _drawn(planned)


# -- a real pool --------------------------------------------------------------

def _planned(tmp_path):
    planned = planned_previews([_image(tmp_path / f"{ROOT}_rate.fits", (64, 64))])
    assert planned
    return planned


def _two_workers_and_a_calibration(tmp_path, max_wait: float):
    """(metrics, a started 2-worker pool, its gate, a product's planned
    previews, the file that ends the calibration, the results, and the
    calibration: a stand-in that holds a worker until that file exists)."""
    metrics = Metrics()
    pool = WorkerPool(2, stage="detector1", metrics=metrics)
    pool.start()
    gate = PreviewGate(max_wait=max_wait, metrics=metrics, stage="detector1")
    planned, opened = _planned(tmp_path), tmp_path / "calibration-done"
    results: dict = {}

    async def calibration():
        with gate.calibrating():
            results["calibration"] = await pool.run(
                "tests.pool_tasks:wait_for_file", {"path": str(opened), "timeout": 300},
                timeout=600)
    return metrics, pool, gate, planned, opened, results, calibration


def _drawn(planned) -> bool:
    return any(Path(p["path"]).exists() for p in planned)


@pytest.mark.anyio
async def test_a_preview_does_not_take_a_free_worker_beside_a_calibration(tmp_path):
    """Two workers, one calibrating: the other stays free while the preview
    waits, and the preview is drawn once the calibration is done."""
    metrics, pool, gate, planned, opened, results, calibration = \
        _two_workers_and_a_calibration(tmp_path, max_wait=600)

    async def preview():
        results["preview"] = await make_previews(pool, planned, CONTEXT, gate)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(calibration)
            await _until(lambda: pool.busy == 1)
            tg.start_soon(preview)
            # Whichever comes first: the preview held back, or drawn beside the run.
            await _until(lambda: _waiting(metrics) == 1 or _drawn(planned))
            assert not _drawn(planned) and pool.busy == 1 and _waiting(metrics) == 1
            opened.touch()
            await _until(lambda: "preview" in results)
        assert results["calibration"].failure is None
        assert sorted(results["preview"]["made"]) == sorted(p["path"] for p in planned)
        assert _drawn(planned) and _waiting(metrics) == 0
    finally:
        opened.touch()
        pool.close()


@pytest.mark.anyio
async def test_a_preview_is_drawn_after_max_wait_beside_a_calibration_that_never_ends(tmp_path):
    """A continuous stream never starves the pictures: past preview_max_wait
    the preview asks for a worker, and gets the free one."""
    metrics, pool, gate, planned, opened, results, calibration = \
        _two_workers_and_a_calibration(tmp_path, max_wait=1.0)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(calibration)
            await _until(lambda: pool.busy == 1)
            results["preview"] = await make_previews(pool, planned, CONTEXT, gate)
            # Drawn while the calibration still holds its worker.
            assert "calibration" not in results and gate.calibrations == 1
            opened.touch()
        assert sorted(results["preview"]["made"]) == sorted(p["path"] for p in planned)
        assert results["calibration"].failure is None and _waiting(metrics) == 0
    finally:
        opened.touch()
        pool.close()


@pytest.mark.anyio
async def test_the_runner_counts_its_calibration_while_it_waits_for_a_worker(tmp_path):
    """What the gate waits for is the runner's own count: an item waiting for
    the pool's one worker is in flight, and is no longer once it is done."""
    metrics, bus, store, pool, runner, item = _runner_and_item(tmp_path)
    opened = tmp_path / "worker-free"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: pool.run("tests.pool_tasks:wait_for_file",
                                           {"path": str(opened), "timeout": 300}, timeout=600))
            await _until(lambda: pool.busy == 1)
            tg.start_soon(runner.run, item)
            await _until(lambda: pool.waiting == 1)
            assert runner.previews.gate.calibrations == 1
            opened.touch()
    finally:
        opened.touch()
        pool.close()
    assert runner.previews.gate.calibrations == 0
    assert [m["outcome"] for topic, m in bus.sent if topic == "products"] == ["success"]


class _HeldBus:
    """A publisher whose product event waits until the test lets it go."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.publishing = anyio.Event()
        self.go = anyio.Event()

    async def publish(self, topic, key, message):
        if topic == "products":
            self.publishing.set()
            await self.go.wait()
        self.sent.append((topic, message))


@pytest.mark.anyio
async def test_an_item_stays_in_flight_until_its_product_event_is_out(tmp_path):
    """Between a run's end and its product event (sealing, commit, publish)
    the item is still in flight: previews held back by a batch are not let go
    beside its last run's commit."""
    metrics, _, store, pool, runner, item = _runner_and_item(tmp_path)
    runner.publisher = bus = _HeldBus()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run, item)
            with anyio.fail_after(120):
                await bus.publishing.wait()
            assert pool.busy == 0  # the run is over, its event not out yet
            assert runner.previews.gate.calibrations == 1
            bus.go.set()
    finally:
        pool.close()
    assert runner.previews.gate.calibrations == 0
    assert [m["outcome"] for topic, m in bus.sent if topic == "products"] == ["success"]
