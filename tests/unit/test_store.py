"""The product store: atomic publication, provenance as the commit marker."""

import json
import os
import socket
import subprocess
import sys

import pytest

from calstream.daemon.doers.product_store import OutsideRoot, ProductStore
from calstream.steps.fitsfile import file_digest


def publish_one(store, content=b"SIMPLE", work_id="w1"):
    scratch = store.scratch("01234", "001", work_id)
    out = scratch / "jw01234001001_02101_00001_nrcb1_rate.fits"
    out.write_bytes(content)
    final = store.directory("01234", "001") / out.name
    event = {"outputs": [{"path": str(final), "digest": file_digest(out), "size": len(content)}],
             "inputs": [{"path": "/in", "digest": "sha256:" + "1" * 64}]}
    moved = store.publish(scratch, "01234", "001", name="jw01234001001_02101_00001_nrcb1",
                          stage="detector1", record={"work_id": work_id, "event": event})
    return moved, scratch


def test_publish_moves_outputs_then_lookup_finds_the_work(tmp_path):
    store = ProductStore(tmp_path)
    moved, scratch = publish_one(store)
    assert [p.name for p in moved] == ["jw01234001001_02101_00001_nrcb1_rate.fits"]
    assert not scratch.exists()
    assert not any(p.name.startswith(".owner") for p in moved[0].parent.iterdir())
    kw = dict(name="jw01234001001_02101_00001_nrcb1", stage="detector1")
    assert store.lookup("01234", "001", work_id="w1", **kw) is not None
    assert store.lookup("01234", "001", work_id="other", **kw) is None
    assert store.has_input("01234", "001", kw["name"], "detector1", "sha256:" + "1" * 64)
    assert not store.has_input("01234", "001", kw["name"], "detector1", "sha256:" + "2" * 64)


def test_a_tampered_or_missing_output_means_not_done(tmp_path):
    store = ProductStore(tmp_path)
    moved, _ = publish_one(store)
    kw = dict(name="jw01234001001_02101_00001_nrcb1", stage="detector1", work_id="w1")
    moved[0].write_bytes(b"SIMPLX")  # same size, other content
    assert store.lookup("01234", "001", **kw) is None
    moved[0].unlink()
    assert store.lookup("01234", "001", **kw) is None


def test_a_torn_record_is_not_done(tmp_path):
    store = ProductStore(tmp_path)
    publish_one(store)
    rec = next((tmp_path / "01234" / "001" / ".provenance").glob("*.json"))
    rec.write_text(rec.read_text()[:20])
    assert store.lookup("01234", "001", name="jw01234001001_02101_00001_nrcb1",
                        stage="detector1") is None


def test_scratch_of_a_dead_process_is_cleaned_but_a_live_ones_is_kept(tmp_path):
    store = ProductStore(tmp_path)
    live = store.scratch("01234", "001", "a" * 64)
    dead = store.scratch("01234", "001", "b" * 64)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    owner = json.loads((dead / ".owner").read_text())
    owner["pid"] = int(child.stdout)  # a pid that has exited
    (dead / ".owner").write_text(json.dumps(owner))
    assert store.clean_scratch() == 1
    assert live.exists() and not dead.exists()
    assert json.loads((live / ".owner").read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("owner", ['{"host": "h", "pid": 99999999999999999999999}',
                                   '{"host": "h", "pid": -1}', '{"host": "h", "pid": 0}',
                                   '["not", "a", "table"]', '{"pid": "x"}', "\x00garbage"])
def test_a_forged_owner_file_neither_stops_the_clean_up_nor_removes_a_fresh_directory(
        tmp_path, owner):
    store = ProductStore(tmp_path)
    scratch = store.scratch("01234", "001", "c" * 64)
    (scratch / ".owner").write_text(owner.replace('"h"', json.dumps(socket.gethostname())))
    assert store.clean_scratch() == 0  # young: left to the age rule
    assert scratch.exists()
    assert store.clean_scratch(older_than=-1) == 1


def test_a_name_that_would_leave_the_store_is_refused(tmp_path):
    store = ProductStore(tmp_path / "products")
    assert store.log_path("01234", "001", "jw01234001001_02101_00001_nrcb1", "detector1")
    with pytest.raises(OutsideRoot):
        store.log_path("01234", "001", "../../../../etc/x", "stage2")
    with pytest.raises(OutsideRoot):
        store.directory("..", "..")


def test_a_dead_lettered_input_is_remembered_by_its_digest(tmp_path):
    store = ProductStore(tmp_path / "products")
    eid = "jw01234001001_02101_00001_nrcb1"
    assert not store.has_failed("01234", "001", eid, "detector1", "sha256:a")
    store.record_failure("01234", "001", name=eid, stage="detector1", digest="sha256:a",
                         reason="calwebb_detector1 failed: bad ramp")
    store.record_failure("01234", "001", name=eid, stage="detector1", digest="sha256:b",
                         reason="x" * 10_000)
    assert store.has_failed("01234", "001", eid, "detector1", "sha256:a")
    assert store.has_failed("01234", "001", eid, "detector1", "sha256:b")
    # New content (a corrected redelivery) is another digest: announced again.
    assert not store.has_failed("01234", "001", eid, "detector1", "sha256:c")
    assert not store.has_failed("01234", "001", eid, "stage2", "sha256:a")


@pytest.mark.parametrize("link,target", [
    ("namespaces/ctx1", "elsewhere"), ("namespaces", "elsewhere"),
    ("namespaces/ctx1", "products"), ("namespaces/ctx1", "products/namespaces/ctx2"),
    ("namespaces/ctx1/01234", "elsewhere"), ("namespaces/ctx1/01234", "products/01234"),
    ("namespaces/ctx1/01234/001/.tmp", "elsewhere"),
    ("namespaces/ctx1/01234/001/.logs", "elsewhere")])
def test_a_link_inside_the_store_takes_no_write_along(tmp_path, link, target):
    """A directory of the store made a symbolic link (by someone, not by
    calstream): judged against the namespace's resolved root, a namespace
    tree linked out of the store, or onto the live tree, took every write of
    its runs along. Nothing is written through a link now, whatever its target."""
    products = tmp_path / "products"
    for d in ("elsewhere", "products/01234/001", "other/ctx2"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    where = products / link
    where.parent.mkdir(parents=True, exist_ok=True)
    if link != "namespaces":
        (products / "namespaces" / "ctx2").symlink_to(tmp_path / "other" / "ctx2")
    where.symlink_to(tmp_path / target, target_is_directory=True)
    before = set(tmp_path.rglob("*"))  # links not followed
    store = ProductStore(products).for_namespace("ctx1")
    eid = "jw01234001001_02101_00001_nrcb1"

    def log():
        path = store.log_path("01234", "001", eid, "stage2")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("log")

    refused = []
    for write in (log, lambda: store.scratch("01234", "001", "d" * 64),
                  lambda: store.write_record("01234", "001", name=eid, stage="stage2",
                                             record={}),
                  lambda: store.record_failure("01234", "001", name=eid, stage="stage2",
                                               digest="sha256:a", reason="x")):
        try:
            write()
        except OutsideRoot as exc:
            assert "symbolic link" in str(exc)
            refused.append(write)
    written = set(tmp_path.rglob("*")) - before
    assert refused and not [p for p in written if p.is_relative_to(where.resolve())]
    assert store.holds(where / "previews" / "x.png") is False


def test_the_link_check_looks_only_below_the_store_s_top(tmp_path, monkeypatch):
    """Resolving the path and the top asked a stat of every name from "/"
    (64 us a check, ~19 checks an exposure); only the names below the top
    can hold a link that would take a write elsewhere (14 us now)."""
    store = ProductStore(tmp_path / "products").for_namespace("ctx1")
    target = store.directory("01234", "001") / ".provenance" / "x.json"
    target.parent.mkdir(parents=True)
    looked: list[str] = []
    lstat = os.lstat

    def recorded(path, *args, **kwargs):
        looked.append(os.fspath(path))
        return lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", recorded)
    assert store.inside(target) == target
    top = os.fspath(store.top)
    assert looked and all(p.startswith(top + os.sep) for p in looked), looked


def test_a_store_reached_through_a_link_is_still_written(tmp_path):
    """The store's own place may be a link (a products directory on another
    disk): only links below it are refused."""
    (tmp_path / "disk").mkdir()
    (tmp_path / "products").symlink_to(tmp_path / "disk", target_is_directory=True)
    for store in (ProductStore(tmp_path / "products"),
                  ProductStore(tmp_path / "products").for_namespace("ctx1")):
        moved, _ = publish_one(store)
        assert moved[0].resolve().is_relative_to(tmp_path / "disk")
        assert store.holds(moved[0].parent / "previews" / "x.png")


def test_a_path_no_file_can_have_is_in_no_namespace(tmp_path):
    """`calstream replay` asks which namespace each input of a work order read
    from the topics is in: a forged order's NUL, lone surrogate or loop of
    links raised out of it."""
    store = ProductStore(tmp_path)
    (tmp_path / "loop").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop")
    for bad in ("a\x00b", "loop/x", "\ud800"):
        assert store.namespace_of(tmp_path / bad / "x_rate.fits") is None
    assert store.namespace_of(tmp_path / "namespaces" / "ctx1" / "x") == "ctx1"
