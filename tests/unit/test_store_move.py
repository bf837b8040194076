"""The product store moved: its history's paths read under the new root
(daemon/deciders/store_move.py), and nothing else let in."""

from __future__ import annotations

import json

import pytest

from calstream.daemon.deciders.event_checks import EventIds
from calstream.daemon.deciders.product_intake import ProductIntake
from calstream.daemon.deciders.store_move import (
    moved_copy_problem,
    moved_inputs,
    moved_roots_problem,
    rerooted_event,
    rerooted_order,
    rerooter,
)
from calstream.daemon.operations.config import ConfigError, load
from tests.unit.test_fast_paths import _product

RATE = "01234/001/jw01234001001_02101_00001_nrcb1_rate.fits"


def test_a_path_under_an_earlier_root_is_read_under_the_current_one():
    reroot = rerooter(["/old/products", "/older"], "/new/products")
    assert reroot(f"/old/products/{RATE}") == f"/new/products/{RATE}"
    assert reroot(f"/older/namespaces/r1/{RATE}") == f"/new/products/namespaces/r1/{RATE}"
    # Under no earlier root: as it is (the judges refuse what lies outside).
    for path in [f"/new/products/{RATE}", "/etc/passwd", f"/old/products-x/{RATE}",
                 "/inbox/x_uncal.fits", "/old/products"]:
        assert reroot(path) == path
    # Text that is no plain path is never turned into one under the new root.
    for path in [f"/old/products/../../etc/{RATE}", "/old/products/./x", "relative/x"]:
        assert not reroot(path).startswith("/new/products/")
    assert rerooter([], "/new/products") is None  # never moved: nothing to do


def test_roots_one_inside_another_are_refused():
    assert moved_roots_problem(["/old/products"], "/new/products") is None
    assert moved_roots_problem([], "/new/products") is None
    for earlier in [["/new"], ["/new/products/old"], ["/a", "/a/b"], ["relative"], ["/"]]:
        assert moved_roots_problem(earlier, "/new/products"), earlier
    with pytest.raises(ConfigError, match="products_moved_from"):
        load(None, env={}, flags={"products": "/data/p", "products_moved_from": ["/data"]})
    cfg = load(None, env={"CALSTREAM_PRODUCTS_MOVED_FROM": '["/old/p"]'},
               flags={"products": "/new/p"})
    assert [str(p) for p in cfg.products_moved_from] == ["/old/p"]


def _moved_product() -> bytes:
    body = json.loads(_product())
    for f in body["outputs"]:
        f["path"] = f["path"].replace("/products/", "/old/products/", 1)
    return json.dumps(body).encode()


def test_the_planner_takes_a_moved_store_s_event_under_the_new_root_and_only_it():
    raw = _moved_product()
    refused, problems = ProductIntake(products_root="/products",
                                      input_roots=["/inbox"]).take(raw, EventIds())
    assert "outside /products" in problems[0]  # what a moved store's history met before
    intake = ProductIntake(products_root="/products", input_roots=["/inbox"],
                           moved_from=["/old/products"])
    event, problems = intake.take(raw, EventIds())
    assert problems == []
    assert [o["path"] for o in event["outputs"]] == [f"/products/{RATE}"]
    assert event["inputs"] == refused["inputs"]  # the inbox never moved
    # Outside both roots: refused as before.
    body = json.loads(raw)
    body["outputs"][0]["path"] = f"/elsewhere/{RATE}"
    assert "outside /products" in intake.take(json.dumps(body).encode(), EventIds())[1][0]


def test_an_order_s_inputs_and_its_association_s_members_move_together():
    reroot = rerooter(["/old"], "/new")
    order = {"inputs": [{"path": f"/old/{RATE}", "digest": "d1"},
                        {"path": "/new/other_rate.fits", "digest": "d2"}],
             "association": {"asn_id": "a", "products": [
                 {"name": "p", "members": [{"expname": f"/old/{RATE}", "exptype": "science"}]}]}}
    moved = rerooted_order(order, reroot)
    assert [i["path"] for i in moved["inputs"]] == [f"/new/{RATE}", "/new/other_rate.fits"]
    assert moved["association"]["products"][0]["members"][0]["expname"] == f"/new/{RATE}"
    assert moved["association"]["asn_id"] == "a" and order["inputs"][0]["path"] == f"/old/{RATE}"
    assert moved_inputs(order, moved) == {f"/new/{RATE}": f"/old/{RATE}"}
    # Other bytes under the new root: a reason naming both paths, never a stale drop.
    problem = moved_copy_problem(moved["inputs"], ["other", "other"], moved_inputs(order, moved))
    assert f"/new/{RATE}" in problem and f"/old/{RATE}" in problem and "moved" in problem
    assert moved_copy_problem(moved["inputs"], ["d1", "other"],
                              moved_inputs(order, moved)) is None  # the second never moved
    # Forged shapes pass through for the schema and the checks to refuse.
    assert rerooted_event({"inputs": "x", "outputs": [1]}, reroot) == {"inputs": "x",
                                                                        "outputs": [1]}


def test_the_console_shows_a_moved_store_s_previews_by_the_paths_events_name(tmp_path):
    from calstream.daemon.operations.console import Console

    cfg = load(None, env={}, flags={"work_dir": tmp_path, "products": tmp_path / "new",
                                    "products_moved_from": [tmp_path / "old"]})
    previews = cfg.products / "01234" / "001" / "previews"
    previews.mkdir(parents=True)
    (previews / "x_thumb.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    console = Console(cfg, lambda: [])
    old = tmp_path / "old" / "01234" / "001" / "previews" / "x_thumb.png"
    assert console.handle(f"/console/preview?path={old}")[:2] == (200, b"\x89PNG fake")
    for outside in [tmp_path / "secret.png", f"{tmp_path}/old/../secret.png"]:
        assert console.handle(f"/console/preview?path={outside}")[0] == 404


def test_a_copied_store_s_records_are_its_own_under_the_new_root(tmp_path):
    import shutil

    from calstream.daemon.doers.product_store import ProductStore
    from tests.unit.test_store import publish_one

    old, new = tmp_path / "old", tmp_path / "new"
    publish_one(ProductStore(old))
    shutil.copytree(old, new, symlinks=True)
    shutil.rmtree(old)
    kw = dict(name="jw01234001001_02101_00001_nrcb1", stage="detector1", work_id="w1")
    assert ProductStore(new).lookup("01234", "001", **kw) is None  # what a move met before
    store = ProductStore(new, moved_from=[str(old)])
    done = store.lookup("01234", "001", **kw)
    final = new / "01234" / "001" / "jw01234001001_02101_00001_nrcb1_rate.fits"
    assert done is not None and done.event["outputs"][0]["path"] == str(final)
    assert store.announced(final) is not None
    assert [r["work_id"] for r in store.records()] == ["w1"]
    assert store.for_namespace("r1").for_namespace("live").lookup("01234", "001", **kw)
    final.write_bytes(b"SIMPLX")  # a damaged copy: not done, as any damaged product
    assert store.lookup("01234", "001", **kw) is None


def test_previews_pending_at_the_move_are_drawn_in_the_new_store(tmp_path):
    from calstream.daemon.doers.product_store import ProductStore
    from tests.unit.test_pending_previews import _pending

    old, new = tmp_path / "old", tmp_path / "new"
    pending = _pending(ProductStore(new, moved_from=[str(old)]))
    pending.mine.mkdir(parents=True)
    rate = f"{old}/{RATE}"
    (pending.mine / f"{'a' * 64}.json").write_text(json.dumps(
        {"outputs": [rate], "log_context": {}}))
    taken = pending._read(f"{'a' * 64}.json")
    assert not isinstance(taken, str), taken  # before: refused, "outside the product store"
    _event_id, previews, _context = taken
    assert previews and all(p["path"].startswith(f"{new}/01234/001/previews/")
                            for p in previews), previews
