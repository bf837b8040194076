"""The reader's rule: a file in the product tree is a product only while a
provenance record announces it with its digest (docs/contract.md, "Reading
the product tree"). A kill between the renames of one run leaves no record,
so nothing it moved is announced; a run that replaces announced files first
withdraws their record."""

import os

import pytest

from calstream.daemon.doers import product_store
from calstream.daemon.doers.product_store import ProductStore
from calstream.steps.fitsfile import file_digest

NAME = "jw01234001001_02101_00001_nrcb1"
KW = dict(name=NAME, stage="detector1")


def run(store, contents: dict[str, bytes], work_id: str):
    """A finished pipeline run in scratch: its outputs and the record to commit."""
    scratch = store.scratch("01234", "001", work_id)
    final = store.directory("01234", "001")
    outputs = []
    for suffix, data in contents.items():
        (scratch / f"{NAME}_{suffix}.fits").write_bytes(data)
        outputs.append({"path": str(final / f"{NAME}_{suffix}.fits"),
                        "digest": file_digest(scratch / f"{NAME}_{suffix}.fits"),
                        "size": len(data), "suffix": suffix})
    return scratch, {"work_id": work_id, "event": {"outputs": outputs, "inputs": []}}


class Killed(BaseException):
    """SIGKILL stand-in: nothing after it runs."""


def kill_after_renames(monkeypatch, n: int) -> None:
    real, done = os.replace, []

    def replace(src, dst):
        if len(done) == n:
            raise Killed
        done.append(dst)
        real(src, dst)

    monkeypatch.setattr(product_store.os, "replace", replace)


def test_a_kill_between_renames_leaves_nothing_announced_and_the_rerun_is(tmp_path,
                                                                          monkeypatch):
    store = ProductStore(tmp_path)
    scratch, record = run(store, {"rate": b"A" * 10, "rateints": b"B" * 10}, "w1")
    kill_after_renames(monkeypatch, 1)
    with pytest.raises(Killed):
        store.publish(scratch, "01234", "001", record=record, **KW)
    monkeypatch.undo()
    rate = store.directory("01234", "001") / f"{NAME}_rate.fits"
    assert rate.exists()  # moved, but ...
    assert store.announced(rate) is None  # ... not a product: no record lists it
    assert store.lookup("01234", "001", work_id="w1", **KW) is None  # so it is redone
    # The re-run (other bytes: jwst stamps dates) replaces it and announces both.
    scratch, record = run(store, {"rate": b"C" * 10, "rateints": b"D" * 10}, "w1")
    store.publish(scratch, "01234", "001", record=record, **KW)
    assert store.announced(rate)["digest"] == file_digest(rate)
    assert store.announced(rate.with_name(f"{NAME}_rateints.fits")) is not None
    assert store.lookup("01234", "001", work_id="w1", **KW) is not None


def test_replacing_announced_files_withdraws_their_record_first(tmp_path, monkeypatch):
    store = ProductStore(tmp_path)
    scratch, record = run(store, {"rate": b"A" * 10, "rateints": b"B" * 10}, "old")
    store.publish(scratch, "01234", "001", record=record, **KW)
    rate = store.directory("01234", "001") / f"{NAME}_rate.fits"
    ints = rate.with_name(f"{NAME}_rateints.fits")
    assert store.announced(rate) and store.announced(ints)
    # A corrected redelivery's run, killed after its first rename: the old
    # record no longer vouches for either file, and nothing new is announced.
    scratch, record = run(store, {"rate": b"C" * 10, "rateints": b"D" * 10}, "new")
    kill_after_renames(monkeypatch, 1)
    with pytest.raises(Killed):
        store.publish(scratch, "01234", "001", record=record, **KW)
    monkeypatch.undo()
    assert store.announced(rate) is None and store.announced(ints) is None
    assert store.lookup("01234", "001", **KW) is None


def test_a_file_that_no_longer_matches_its_record_is_not_announced(tmp_path):
    store = ProductStore(tmp_path)
    scratch, record = run(store, {"rate": b"A" * 10}, "w1")
    store.publish(scratch, "01234", "001", record=record, **KW)
    rate = store.directory("01234", "001") / f"{NAME}_rate.fits"
    rate.write_bytes(b"Z" * 10)
    assert store.announced(rate) is None
    assert store.announced(rate.with_name("unrelated.fits")) is None


def test_records_can_be_read_for_one_stage(tmp_path):
    store = ProductStore(tmp_path)
    scratch, record = run(store, {"rate": b"A" * 10}, "w1")
    store.publish(scratch, "01234", "001", record=record, **KW)
    assert len(store.records()) == len(store.records("detector1")) == 1
    assert store.records("stage3") == []


def test_a_link_or_a_fifo_in_an_announced_file_s_place_is_no_product(tmp_path):
    """docs/contract.md: a reader checks that a file is a regular file, "not
    a link out, a FIFO or a device", or asks ``announced``. It followed a
    link (one out of the store, to bytes of the record's digest, was "a
    product"), and a FIFO of the record's size (0) raised NotARegularFile
    out of it instead of answering None."""
    store = ProductStore(tmp_path / "store")
    scratch, record = run(store, {"rate": b"A" * 10, "rateints": b""}, "w1")
    store.publish(scratch, "01234", "001", record=record, **KW)
    rate = store.directory("01234", "001") / f"{NAME}_rate.fits"
    ints = rate.with_name(f"{NAME}_rateints.fits")
    assert store.announced(rate) is not None and store.announced(ints) is not None
    outside = tmp_path / "outside.fits"
    outside.write_bytes(b"A" * 10)  # the very bytes the record names
    rate.unlink()
    rate.symlink_to(outside)
    ints.unlink()
    os.mkfifo(ints)
    assert store.announced(rate) is None
    assert store.announced(ints) is None
