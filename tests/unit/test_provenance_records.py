"""Provenance records read back from the store are untrusted files too.

A record that is JSON but not what calstream writes used to raise out of
``lookup`` (so out of the stage consumer's handler, which retries what raises
as a broker fault: the item was retried forever), out of ``records`` (so out
of the planner's start), or lead ``lookup`` to hash whatever an output path
named. Now such a record counts as absent, with a warning: the work is run
again and its new record replaces it (deciders/provenance_records.py).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import anyio
import pytest

from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.steps.fitsfile import file_digest
from calstream.topics import contract

NAME = "jw01234001001_02101_00001_nrcb1"
KW = dict(name=NAME, stage="detector1")


def publish(store: ProductStore, work_id: str = "c" * 64) -> tuple[Path, dict]:
    """A detector1 product as the runner commits it: a file and its record,
    whose event is a product event the contract accepts."""
    scratch = store.scratch("01234", "001", work_id)
    (scratch / f"{NAME}_rate.fits").write_bytes(b"SIMPLE")
    final = store.directory("01234", "001") / f"{NAME}_rate.fits"
    event = contract.build(
        "product", contract.event_id("product", work_id, "success"), work_id=work_id,
        stage="detector1", pipeline="calwebb_detector1", outcome="success", program="01234",
        observation="001", product_name=NAME, jwst_version="3.0.0",
        crds_context="jwst_0001.pmap", pointing_quality="CALCULATED", pointing_provisional=False,
        inputs=[{"path": "/inbox/x_uncal.fits", "digest": "sha256:" + "1" * 64}],
        outputs=[{"path": str(final), "digest": file_digest(scratch / final.name), "size": 6,
                  "suffix": "rate"}]).body
    store.publish(scratch, "01234", "001", record={"work_id": work_id, "event": event}, **KW)
    record_path = store.directory("01234", "001") / ".provenance" / f"{NAME}.detector1.json"
    return record_path, json.loads(record_path.read_text())


def _spoiled(record: dict, how: str, tmp_path: Path) -> object:
    event = record["event"]
    out = event["outputs"][0]
    return {
        "a list": [record],
        "event as text": {**record, "event": "done"},
        "outputs as an object": {**record, "event": {**event, "outputs": {"a": 1}}},
        "an output without a path": {**record, "event": {**event, "outputs": [{"digest": "x"}]}},
        "an output outside the store": {**record, "event": {**event, "outputs": [
            {**out, "path": "/etc/hostname"}]}},
        "an output going up": {**record, "event": {**event, "outputs": [
            {**out, "path": str(tmp_path / "store" / ".." / "elsewhere")}]}},
        "a size that is text": {**record, "event": {**event, "outputs": [{**out, "size": "6"}]}},
        "an input that is a number": {**record, "event": {**event, "inputs": [7]}},
        "emitted_at a number": {**record, "event": {**event, "emitted_at": 7}},
        "work_id a list": {**record, "work_id": [1]},
    }[how]


SPOILS = ["a list", "event as text", "outputs as an object", "an output without a path",
          "an output outside the store", "an output going up", "a size that is text",
          "an input that is a number", "emitted_at a number", "work_id a list"]


@pytest.mark.parametrize("how", SPOILS)
def test_a_record_calstream_could_not_have_written_counts_as_absent(tmp_path, how, caplog):
    store = ProductStore(tmp_path / "store")
    record_path, record = publish(store)
    rate = Path(record["event"]["outputs"][0]["path"])
    assert store.lookup("01234", "001", **KW) is not None and store.announced(rate)
    record_path.write_text(json.dumps(_spoiled(record, how, tmp_path)))
    assert store.lookup("01234", "001", **KW) is None  # run again, not retried forever
    assert store.records() == []  # the planner's start, the console, promotions
    assert store.announced(rate) is None  # not a product for readers either
    assert "cannot be used" in caplog.text


def test_a_product_replaced_by_a_fifo_is_not_read(tmp_path):
    """A record whose output is now a FIFO or a link is not done: a product
    is a regular file (reading a FIFO would block the stage's thread for
    good; a link may lead out of the store to the same bytes)."""
    store = ProductStore(tmp_path / "store")
    _, record = publish(store)
    rate = Path(record["event"]["outputs"][0]["path"])
    rate.unlink()
    os.mkfifo(rate)
    assert stat.S_ISFIFO(rate.lstat().st_mode)
    assert store.lookup("01234", "001", **KW) is None
    rate.unlink()
    elsewhere = tmp_path / "elsewhere.fits"  # the same bytes, outside the store
    elsewhere.write_bytes(b"SIMPLE")
    rate.symlink_to(elsewhere)
    assert store.lookup("01234", "001", **KW) is None


@pytest.mark.parametrize("change, reason", [
    ({"product_name": "jw01234001001_02101_00002_nrcb1"}, "not this item's"),
    ({"stage": "stage2"}, "not this item's"),
    ({"pipeline": 7}, "not a product event"),
])
def test_a_record_whose_event_cannot_stand_for_the_work_is_run_again(tmp_path, change, reason,
                                                                      caplog):
    store = ProductStore(tmp_path / "store")
    wid = "a" * 64
    record_path, record = publish(store, wid)
    item = WorkItem(stage="detector1", pipeline="calwebb_detector1", task="t:f", task_kwargs={},
                    program="01234", observation="001", name=NAME, inputs=[])
    assert WorkItemRunner._done(item, wid, store) is not None
    record["event"].update(change)
    record_path.write_text(json.dumps(record))
    assert store.lookup("01234", "001", **KW) is not None  # a usable record...
    assert WorkItemRunner._done(item, wid, store) is None  # ...but not this work's
    assert reason in caplog.text


def test_the_planner_starts_past_stage3_records_it_cannot_take(tmp_path, caplog):
    from .test_planner_snapshot import _planner

    planner = _planner(tmp_path)
    planner.cfg.products = tmp_path / "products"
    store = ProductStore(planner.cfg.products)
    good, bad = "jw01234-o001_t001_nircam_clear-f150w", "jw01234-o002_t001_nircam_clear-f150w"
    for name, inputs in ((good, [{"path": "/x", "digest": "sha256:" + "2" * 64,
                                  "role": "science"}]),
                         (bad, [{"path": "/x", "digest": "sha256:" + "3" * 64},
                                {"path": "/y", "digest": "sha256:" + "4" * 64,
                                 "role": "science"}])):  # roles None and text: unsortable
        event = contract.build(
            "product", contract.event_id("product", name), work_id="b" * 64, stage="stage3",
            pipeline="calwebb_image3", outcome="success", program="01234",
            observation=name[9:12], product_name=name, jwst_version="3.0.0",
            crds_context="jwst_0001.pmap", pointing_quality="CALCULATED",
            pointing_provisional=False, inputs=inputs, outputs=[], version=1).body
        store.write_record("01234", name[9:12], name=name, stage="stage3",
                           record={"work_id": "b" * 64, "event": event})
    anyio.run(planner._restore_from_disk)
    assert planner.state.stage3.restored_order_count() == 1
    assert f"stage-3 record of {bad} left out" in caplog.text


@pytest.mark.parametrize("content", [b'{"sha256:1": "\xe9"}', b"[" * 100_000 + b"]" * 100_000,
                                     b"[1, 2]"])
def test_a_damaged_failure_record_is_read_as_none_and_written_anew(tmp_path, content):
    store = ProductStore(tmp_path / "store")
    failed = store.directory("01234", "001") / ".failed" / f"{NAME}.detector1.json"
    failed.parent.mkdir(parents=True)
    failed.write_bytes(content)
    assert not store.has_failed("01234", "001", NAME, "detector1", "sha256:1")
    store.record_failure("01234", "001", name=NAME, stage="detector1", digest="sha256:1",
                         reason="bad")
    assert store.has_failed("01234", "001", NAME, "detector1", "sha256:1")


def test_a_directory_that_is_no_namespace_is_left_out(tmp_path, caplog):
    """A stray directory under namespaces/ made ``for_namespace`` raise out of
    the planner's start (and "live" there stood for the live tree)."""
    store = ProductStore(tmp_path / "store")
    for name in ("Bad Name", "live", "ctx2"):
        (tmp_path / "store" / "namespaces" / name).mkdir(parents=True)
    assert store.namespaces() == ["ctx2"]
    assert "Bad Name" in caplog.text
    assert [store.for_namespace(n).namespace for n in store.namespaces()] == ["ctx2"]


def test_a_record_naming_an_output_no_file_can_have_counts_as_absent(tmp_path, caplog):
    """A lone surrogate in an output's path raised UnicodeEncodeError out of
    ``lookup`` (its lstat) instead of "not done" (door fuzz)."""
    store = ProductStore(tmp_path / "store")
    record_path, record = publish(store)
    out = record["event"]["outputs"][0]
    record["event"]["outputs"] = [{**out, "path": out["path"] + "\ud800"}]
    record_path.write_text(json.dumps(record))
    assert store.lookup("01234", "001", **KW) is None
    assert "no file can have" in caplog.text
