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


def test_events_put_back_after_a_move_are_the_events_as_published(tmp_path):
    """A broker that lost its product events gets them again from the store
    (recovery_reads.every_record), under the same event ids. Read under the
    new root, they named other files than the events of those ids every
    subscriber holds: `calstream subscribe` refused each as "conflicting",
    what docs/contract.md says of a forgery."""
    import shutil

    from calstream.daemon.doers.product_store import ProductStore
    from calstream.daemon.doers.recovery_reads import every_record
    from tests.unit.test_store import publish_one

    old, new = tmp_path / "old", tmp_path / "new"
    publish_one(ProductStore(old))
    published = every_record(ProductStore(old))[0]["event"]
    shutil.copytree(old, new, symlinks=True)
    shutil.rmtree(old)
    (again,) = every_record(ProductStore(new, moved_from=[str(old)]))
    assert again["event"] == published
    assert again["event"]["outputs"][0]["path"].startswith(f"{old}/")


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_work_done_before_a_move_is_re_emitted_as_it_was_published(tmp_path):
    """Work found done (a redelivery, a rebalance, the same replay again)
    re-emits its event so that a subscriber that missed it gets it: "the
    same event_id and the same content" (docs/contract.md). After a move it
    went out with its paths under the new root: other content under the
    same id, which `calstream subscribe` reports and does not deliver."""
    import shutil

    import anyio

    from calstream.daemon.deciders.event_checks import content_digest
    from calstream.daemon.doers.product_store import ProductStore
    from calstream.daemon.doers.work_item_runner import WorkItemRunner
    from tests.recording_bus import RecordingBus
    from tests.unit.test_runner_recheck import _runner_and_item, _runs

    metrics, bus, store, pool, runner, item = _runner_and_item(tmp_path)
    old, new = store.top, tmp_path / "moved"
    try:
        with anyio.fail_after(60):
            await runner.run(item)
            shutil.copytree(old, new, symlinks=True)
            shutil.rmtree(old)
            moved = WorkItemRunner(runner.cfg, publisher=RecordingBus(),
                                   store=ProductStore(new, moved_from=[str(old)]), pool=pool,
                                   metrics=metrics, crds_context="jwst_0001.pmap")
            await moved.run(item)
    finally:
        pool.close()
    assert _runs(metrics) == {"success": 1.0, "duplicate": 1.0}  # found done, not run again
    [(_, first)], [(_, again)] = bus.sent, moved.publisher.sent
    assert again.event_id == first.event_id
    assert content_digest(again.body) == content_digest(first.body)
