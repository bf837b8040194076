""""Already done" is asked again the moment a worker is free for an item
(issue 13): a record handed over twice around a rebalance, whose first run
another member finished while this one waited for a worker, must not start
a second run. Real worker processes (tiny tasks, no jwst)."""

import anyio
import pytest

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.fitsfile import file_digest
from calstream.topics import contract
from tests.recording_bus import RecordingBus

NAME = "jw01234001001_02101_00001_nrcb1"
ELSEWHERE = "e" * 64  # the event id of the product the other member made


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _runs(metrics: Metrics) -> dict[str, float]:
    return {s.labels["outcome"]: s.value for m in metrics.stage_runs.collect()
            for s in m.samples if s.name.endswith("_total")}


def _runner_and_item(tmp_path):
    """A runner with one started worker, and a detector1 item for it."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    metrics, bus, store = Metrics(), RecordingBus(), ProductStore(cfg.products)
    pool = WorkerPool(1, stage="detector1", metrics=metrics)
    pool.start()
    runner = WorkItemRunner(cfg, publisher=bus, store=store, pool=pool, metrics=metrics,
                            crds_context="jwst_0001.pmap")
    item = WorkItem(stage="detector1", pipeline="calwebb_detector1",
                    task="tests.pool_tasks:write_rate", task_kwargs={"name": NAME},
                    program="01234", observation="001", name=NAME,
                    inputs=[{"path": "/in/u.fits", "digest": "sha256:" + "0" * 64}],
                    event_fields={"exposure_id": NAME})
    return metrics, bus, store, pool, runner, item


@pytest.mark.anyio
async def test_an_item_done_elsewhere_while_it_waited_for_a_worker_is_not_run(tmp_path):
    metrics, bus, store, pool, runner, item = _runner_and_item(tmp_path)
    gate = tmp_path / "gate"
    try:
        async with anyio.create_task_group() as tg:
            # The only worker is busy with something else ...
            tg.start_soon(lambda: pool.run("tests.pool_tasks:wait_for_file",
                                           {"path": str(gate)}, timeout=60))
            with anyio.fail_after(30):
                while pool.busy < 1:
                    await anyio.sleep(0.01)
            # ... so the item, not done yet, waits for it,
            tg.start_soon(runner.run, item)
            with anyio.fail_after(30):
                while pool.waiting < 1:
                    await anyio.sleep(0.01)
            # and meanwhile the member that got the partition finishes the same work.
            scratch = store.scratch("01234", "001", "elsewhere")
            product = scratch / f"{NAME}_rate.fits"
            product.write_bytes(b"SIMPLE made elsewhere")
            final = store.directory("01234", "001") / product.name
            # A record as the other member's runner commits it (its event must
            # stand for this work: deciders/provenance_records.py).
            event = contract.build(
                "product", ELSEWHERE, work_id=runner.work_id(item), stage="detector1",
                pipeline="calwebb_detector1", outcome="success", program="01234",
                observation="001", product_name=NAME, jwst_version="3.0.0",
                crds_context="jwst_0001.pmap", pointing_quality="CALCULATED",
                pointing_provisional=False, inputs=item.inputs, outputs=[
                    {"path": str(final), "digest": file_digest(product),
                     "size": product.stat().st_size, "suffix": "rate"}]).body
            store.publish(scratch, "01234", "001", name=NAME, stage="detector1",
                          record={"work_id": runner.work_id(item), "event": event})
            gate.touch()
    finally:
        pool.close()
    # Not run again: the other member's product stays, its event is re-emitted.
    assert final.read_bytes() == b"SIMPLE made elsewhere"
    assert [(topic, m["event_id"]) for topic, m in bus.sent] == [("products", ELSEWHERE)]
    assert _runs(metrics) == {"duplicate": 1.0}
    assert not list((store.directory("01234", "001") / ".tmp").iterdir())


@pytest.mark.anyio
async def test_every_line_about_a_run_names_its_work(tmp_path, caplog):
    """docs/operations.md, "Logs": the exposure id, the stage and the work id
    on every line about an exposure. The runner's own lines ("starting",
    "done") carried "-" for the work id."""
    metrics, bus, store, pool, runner, item = _runner_and_item(tmp_path)
    caplog.set_level("INFO", logger="calstream.stage")
    try:
        with anyio.fail_after(60):
            await runner.run(item)
    finally:
        pool.close()
    lines = [r for r in caplog.records if r.name == "calstream.stage"]
    assert any("starting" in r.getMessage() for r in lines), [r.getMessage() for r in lines]
    assert {(r.exposure_id, r.stage, r.work_id) for r in lines} == {
        (NAME, "detector1", runner.work_id(item))}


@pytest.mark.anyio
async def test_work_made_again_after_its_files_were_damaged_is_another_event(tmp_path):
    """A repeated event has "the same event_id and the same content"
    (docs/contract.md). The same work run again once its file was damaged
    makes other bytes, and its event went out under the first one's id:
    `calstream subscribe` counted it `conflicting` and did not deliver it,
    the planner dead-lettered it ("event id ... already used for other
    content"), and both kept the event whose file was gone."""
    from pathlib import Path

    from calstream.daemon.deciders.event_checks import content_digest

    metrics, bus, store, pool, runner, item = _runner_and_item(tmp_path)
    try:
        with anyio.fail_after(60):
            await runner.run(item)
            [(_, first)] = bus.sent
            rate = first["outputs"][0]["path"]
            data = Path(rate).read_bytes()
            Path(rate).unlink()
            Path(rate).write_bytes(b"DAMAGE" + data[6:])  # the same size, other bytes
            await runner.run(item)
            await runner.run(item)  # done now: its event again, as it was
    finally:
        pool.close()
    assert _runs(metrics) == {"success": 2.0, "duplicate": 1.0}
    [_, (_, remade), (_, again)] = bus.sent
    assert remade["outputs"][0]["digest"] == file_digest(rate) != first["outputs"][0]["digest"]
    assert remade.event_id != first.event_id
    assert again.event_id == remade.event_id
    assert content_digest(again.body) == content_digest(remade.body)
