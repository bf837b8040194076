"""A product event larger than every reader takes (contract.MAX_MESSAGE_BYTES)
is a fault of the item, not of the broker: a dead letter with its reason,
nothing committed. Before, the event was checked against its schema only;
the products were moved in and the provenance record written (the commit),
then the event's encoding refused it at the send, outside what the run's
outcomes handle: the record was taken again, found done, its event
re-emitted and refused again, for as long as the daemon ran. Real worker
processes (a tiny task), a real product store."""

import anyio
import pytest

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.kafka.publisher import PRODUCER_INFO
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from tests.recording_bus import RecordingBus

NAME = "jw01234001001_02101_00001_nrcb1"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _item(length: int) -> WorkItem:
    return WorkItem(stage="detector1", pipeline="calwebb_detector1",
                    task="tests.pool_tasks:write_rate_with_a_long_parameter",
                    task_kwargs={"name": NAME, "length": length},
                    program="01234", observation="001", name=NAME,
                    inputs=[{"path": "/in/u.fits", "digest": "sha256:" + "0" * 64}],
                    event_fields={"exposure_id": NAME})


@pytest.mark.anyio
async def test_a_product_event_no_reader_would_take_is_a_dead_letter_and_nothing_is_committed(
        tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    metrics, bus, store = Metrics(), RecordingBus(encode=True), ProductStore(cfg.products)
    pool = WorkerPool(1, stage="detector1", metrics=metrics)
    pool.start()
    runner = WorkItemRunner(cfg, publisher=bus, store=store, pool=pool, metrics=metrics,
                            crds_context="jwst_0001.pmap")
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            await runner.run(_item(contract.MAX_MESSAGE_BYTES + 1000))
            # The run's log and its failure's record only: no product, no
            # provenance record (the commit marker).
            committed = [str(p.relative_to(cfg.products)) for p in cfg.products.rglob("*")
                         if p.is_file() and p.parent.name not in (".logs", ".failed")]
            # The same item again (its record redelivered): judged the same way.
            await runner.run(_item(contract.MAX_MESSAGE_BYTES + 1000))
            # A parameter that fits: the product is made as ever.
            await runner.run(_item(10))
    finally:
        pool.close()
    letters = [s for s in bus.sent if s[0] == "deadletter"]
    assert len(letters) == 2, bus.sent
    assert all("bytes" in reason and "limit" in reason for _, _, reason in letters), letters
    assert committed == [], committed
    assert [s[0] for s in bus.sent] == ["deadletter", "deadletter", "products"]


@pytest.mark.anyio
async def test_a_done_record_whose_event_no_reader_would_take_is_run_again_not_re_emitted(
        tmp_path):
    """A record committed before the check above (an older calstream), or a
    record file grown since: re-emitting its event raised at the send, and
    the stage consumer took that for the broker's fault and retried the
    record for as long as the daemon ran, its partition held."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    metrics, bus, store = Metrics(), RecordingBus(encode=True), ProductStore(cfg.products)
    pool = WorkerPool(1, stage="detector1", metrics=metrics)
    pool.start()
    runner = WorkItemRunner(cfg, publisher=bus, store=store, pool=pool, metrics=metrics,
                            crds_context="jwst_0001.pmap")
    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            await runner.run(_item(10))
            wid = runner.work_id(_item(10))
            done = store.lookup("01234", "001", name=NAME, stage="detector1", work_id=wid)
            grown = {**done.event,
                     "parameters": {"steps": {"jump": {"note": "x" * contract.MAX_MESSAGE_BYTES}}}}
            assert contract.is_valid("product", grown)  # its schema takes it: only its size
            store.write_record("01234", "001", name=NAME, stage="detector1",
                               record={**done.record, "event": grown})
            await runner.run(_item(10))  # its record redelivered
    finally:
        pool.close()
    assert [s[0] for s in bus.sent] == ["products", "products"], bus.sent
    assert len(contract.encode(bus.sent[-1][1])) < contract.MAX_MESSAGE_BYTES


class _ProducingBus(RecordingBus):
    """Sends as the real publisher does (kafka/publisher.py ``_hand_over``):
    the body gets its ``producer`` first, then it is encoded."""

    async def publish(self, topic, key, message):
        message.body.setdefault("producer", {**PRODUCER_INFO, "role": "daemon"})
        await super().publish(topic, key, message)


@pytest.mark.anyio
async def test_an_event_the_producer_field_takes_over_the_limit_is_a_dead_letter_before_the_commit(
        tmp_path):
    """The check before the commit measured the event without the ``producer``
    the publisher adds at the send: one within ~100 bytes of the limit was
    committed, then refused at the send, and re-emitted and refused for ever."""
    sizes = {}
    for store_dir, length in (("a", 10), ("b", None)):
        cfg = load(None, env={}, flags={"work_dir": tmp_path / store_dir})
        metrics, bus, store = Metrics(), _ProducingBus(encode=True), ProductStore(cfg.products)
        pool = WorkerPool(1, stage="detector1", metrics=metrics)
        pool.start()
        runner = WorkItemRunner(cfg, publisher=bus, store=store, pool=pool, metrics=metrics,
                                crds_context="jwst_0001.pmap")
        if length is None:  # fits without its producer, not with it
            length = 10 + contract.MAX_MESSAGE_BYTES - 20 - sizes["a"]
        try:
            with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
                await runner.run(_item(length))
                if store_dir == "b":
                    await runner.run(_item(length))  # its record redelivered
        finally:
            pool.close()
        if store_dir == "a":
            done = store.lookup("01234", "001", name=NAME, stage="detector1")
            sizes["a"] = len(contract.compact_json(
                {k: v for k, v in done.event.items() if k != "producer"}))
    assert [s[0] for s in bus.sent] == ["deadletter", "deadletter"], bus.sent
    committed = [p for p in cfg.products.rglob("*")
                 if p.is_file() and p.parent.name not in (".logs", ".failed")]
    assert committed == [], committed
