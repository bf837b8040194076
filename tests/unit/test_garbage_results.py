"""A task's answer is as untrusted as its input: a result of the wrong shape,
an output outside the run's scratch directory or a symbolic link among its
files is the run's fault, a dead letter with the reason, and nothing of it
lands in the product store. Before, the first raised out of the runner
(KeyError, TypeError) and the stage consumer, taking it for the broker's or
the disk's fault, ran the item again and again for as long as the daemon
ran, its partition held; an output elsewhere was announced under the
store's directory, where no such file was ever moved; a link was moved into
the store and announced as a product with the digest of what it pointed to.
Real worker processes (tiny tasks), a real product store."""


import anyio
import pytest

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.fitsfile import file_digest
from tests.recording_bus import RecordingBus

NAME = "jw01234001001_02101_00001_nrcb1"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _item(task: str, **kwargs) -> WorkItem:
    return WorkItem(stage="detector1", pipeline="calwebb_detector1",
                    task=f"tests.pool_tasks:{task}", task_kwargs={"name": NAME, **kwargs},
                    program="01234", observation="001", name=NAME,
                    inputs=[{"path": "/in/u.fits", "digest": "sha256:" + "0" * 64}],
                    event_fields={"exposure_id": NAME})


async def _run_all(tmp_path, items):
    """Each item run in turn by one runner: what it sent, what the store holds."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "retry_backoff": 0.05})
    metrics, bus, store = Metrics(), RecordingBus(encode=True), ProductStore(cfg.products)
    pool = WorkerPool(1, stage="detector1", metrics=metrics)
    pool.start()
    runner = WorkItemRunner(cfg, publisher=bus, store=store, pool=pool, metrics=metrics,
                            crds_context="jwst_0001.pmap")
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            for item in items:
                await runner.run(item)
    finally:
        pool.close()
    kept = sorted(str(p.relative_to(cfg.products)) for p in cfg.products.rglob("*")
                  if (p.is_file() or p.is_symlink())
                  and p.parent.name not in (".logs", ".failed", ".claims")
                  and ".previews-pending" not in p.parts)
    return bus.sent, kept


SHAPES = ["not_a_dict", "no_outputs", "outputs_not_a_list", "no_jwst_version",
          "duration_not_a_number"]


@pytest.mark.anyio
async def test_a_result_of_the_wrong_shape_is_a_dead_letter_not_a_fault_retried_for_ever(
        tmp_path):
    sent, kept = await _run_all(tmp_path, [
        _item("returns_a_result_of_the_wrong_shape", shape=shape) for shape in SHAPES])
    assert [s[0] for s in sent] == ["deadletter"] * len(SHAPES), sent
    assert all("result" in reason for _, _, reason in sent), sent
    assert kept == [], kept


@pytest.mark.anyio
async def test_an_output_outside_the_scratch_directory_is_a_dead_letter(tmp_path):
    elsewhere = tmp_path / "elsewhere_rate.fits"
    sent, kept = await _run_all(tmp_path, [
        _item("lists_an_output_elsewhere", elsewhere=str(elsewhere))])
    assert [s[0] for s in sent] == ["deadletter"], sent
    assert "outside" in sent[0][2], sent
    assert kept == [], kept
    assert elsewhere.read_bytes() == b"SIMPLE not ours"  # left alone


@pytest.mark.anyio
async def test_a_symbolic_link_among_the_outputs_is_a_dead_letter(tmp_path):
    target = tmp_path / "secret.txt"
    target.write_text("not a product")
    sent, kept = await _run_all(tmp_path, [_item("links_an_output", target=str(target))])
    assert [s[0] for s in sent] == ["deadletter"], sent
    assert "regular file" in sent[0][2], sent
    assert kept == [], kept


@pytest.mark.anyio
async def test_an_unlisted_symbolic_link_beside_the_products_stays_out_of_the_store(tmp_path):
    target = tmp_path / "secret.txt"
    target.write_text("not a product")
    sent, kept = await _run_all(tmp_path, [
        _item("links_an_output", target=str(target), listed=False)])
    assert [s[0] for s in sent] == ["products"], sent
    assert not any(k.endswith("_cal.fits") for k in kept), kept


@pytest.mark.anyio
async def test_an_answer_the_daemon_cannot_unpickle_is_a_dead_letter_and_the_pool_goes_on(
        tmp_path):
    """Before, the unpickling error raised out of the pool and the runner,
    and the stage consumer ran the item again for as long as the daemon ran."""
    sent, kept = await _run_all(tmp_path, [_item("returns_an_unreadable_answer"),
                                           _item("write_rate")])
    assert [s[0] for s in sent] == ["deadletter", "products"], sent
    assert "cannot be read" in sent[0][2] and "cannot rebuild" in sent[0][2], sent


@pytest.mark.anyio
async def test_a_file_a_run_leaves_unlisted_is_not_moved_over_another_exposures_product(
        tmp_path):
    """Only a run's listed outputs are its products: before, every file of its
    scratch directory was moved into the observation's directory, which all
    its exposures share, unannounced, and one under another exposure's
    product name replaced that published product's bytes."""
    other = "jw01234001001_02101_00002_nrcb1"
    first = _item("write_rate")
    first.name = first.task_kwargs["name"] = other
    first.inputs = [{"path": "/in/u2.fits", "digest": "sha256:" + "2" * 64}]
    second = _item("writes_beside", other=f"{other}_rate.fits", content=b"SIMPLE junk")
    sent, kept = await _run_all(tmp_path, [first, second])
    assert [s[0] for s in sent] == ["products", "products"], sent
    (announced,) = sent[0][1]["outputs"]
    assert file_digest(announced["path"]) == announced["digest"]
    assert [o["path"] for o in sent[1][1]["outputs"]] == [
        str(tmp_path / "work" / "products" / "01234" / "001" / f"{NAME}_rate.fits")]


@pytest.mark.anyio
async def test_a_scratch_directory_removed_under_a_run_is_run_again_not_dead_lettered(tmp_path):
    """Its outputs gone is no fault of the task's answer: the run is tried
    again (transient), and its product made."""
    sent, kept = await _run_all(tmp_path, [
        _item("scratch_removed_once", counter=str(tmp_path / "runs"))])
    assert [s[0] for s in sent] == ["products"], sent
    assert (tmp_path / "runs").read_text() == "2"
