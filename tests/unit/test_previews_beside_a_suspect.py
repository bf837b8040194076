"""A preview is a run in a worker like a calibration: it waits while a
suspect runs alone (work_item_runs.Solitude), and a suspect waits for the
previews being drawn. Before, previews bypassed Solitude: one drawn beside
a suspect's run made that run's mark say "alone" when it was not, so a
container's end the preview caused (a huge image drawn) was blamed on the
suspect, counted against it up to its dead letter. Real worker processes:
a stand-in suspect run that holds its worker until the test opens a file,
and a real preview drawn from a real FITS file."""

from __future__ import annotations

import anyio
import pytest

from calstream.daemon.doers.preview_runner import make_previews
from calstream.daemon.doers.work_item_runs import solitude
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.metrics import Metrics
from tests.unit.test_preview_gate import CONTEXT, _drawn, _planned, _until


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _held_back(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("calstream_runs_waiting_alone",
                                             {"stage": "detector1", "run": "held_back"})


@pytest.mark.anyio
async def test_a_preview_waits_while_a_suspect_runs_alone(tmp_path):
    """Two workers, a suspect's run on one: the preview (ungated, as a
    product's own previews are drawn) does not take the other."""
    metrics = Metrics()
    pool = WorkerPool(2, stage="detector1", metrics=metrics)
    pool.start()
    planned, opened = _planned(tmp_path), tmp_path / "suspect-done"
    results: dict = {}

    async def suspect():
        async with solitude().run(alone=True):
            results["suspect"] = await pool.run(
                "tests.pool_tasks:wait_for_file", {"path": str(opened), "timeout": 300},
                timeout=600)

    async def preview():
        results["preview"] = await make_previews(pool, planned, CONTEXT, metrics=metrics)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(suspect)
            await _until(lambda: pool.busy == 1)
            tg.start_soon(preview)
            # Whichever comes first: the preview held back, or drawn beside the suspect.
            await _until(lambda: _held_back(metrics) == 1 or _drawn(planned))
            assert not _drawn(planned) and pool.busy == 1, "drawn beside a suspect's run"
            opened.touch()
            await _until(lambda: "preview" in results)
        assert results["suspect"].failure is None
        assert sorted(results["preview"]["made"]) == sorted(p["path"] for p in planned)
        assert _held_back(metrics) == 0
    finally:
        opened.touch()
        pool.close()


def draws_until(previews):
    """A preview's run that holds its worker until the file its "preview" names exists."""
    from tests.pool_tasks import wait_for_file

    wait_for_file(previews[0]["path"], timeout=300)
    return {"made": [], "failed": {}}


def _suspects_waiting(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("calstream_runs_waiting_alone",
                                             {"stage": "detector1", "run": "suspect"})


@pytest.mark.anyio
async def test_a_suspect_waits_for_a_preview_being_drawn(tmp_path, monkeypatch):
    """The other way round: a preview's run holds this process's Solitude
    as a calibration's does, so a suspect does not begin beside it."""
    from calstream.daemon.doers import preview_runner

    monkeypatch.setattr(preview_runner, "PREVIEW_TASK",
                        "tests.unit.test_previews_beside_a_suspect:draws_until")
    metrics = Metrics()
    pool = WorkerPool(2, stage="detector1", metrics=metrics)
    pool.start()
    opened = tmp_path / "preview-done"
    order: list[str] = []

    async def preview():
        await make_previews(pool, [{"path": str(opened)}], CONTEXT)
        order.append("preview out")

    async def suspect():
        async with solitude().run(alone=True, metrics=metrics, stage="detector1"):
            order.append("suspect in")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(preview)
            await _until(lambda: pool.busy == 1)
            tg.start_soon(suspect)
            # Whichever comes first: the suspect held back, or begun beside the preview.
            await _until(lambda: _suspects_waiting(metrics) == 1 or order)
            assert order == [], "a suspect began beside a preview being drawn"
            opened.touch()
        assert order == ["preview out", "suspect in"]
    finally:
        opened.touch()
        pool.close()
