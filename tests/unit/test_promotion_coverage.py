"""A namespace that covers less than live is not promoted without being told
(deciders/promotion_coverage.py, doers/promotion.py; docs/operations.md,
"Replay and promotion")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from calstream.daemon.deciders.promotion_coverage import coverage_gap
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.promotion import PartialPromotion, ensure_current, promote


def _eid(n: int) -> str:
    return f"jw01234001001_02101_{n:05d}_nrcb1"


def _record(n: int, stage: str) -> dict:
    return {"work_id": f"{n:064x}", "event": {
        "stage": stage, "program": "01234", "observation": "001", "exposure_id": _eid(n),
        "product_name": _eid(n), "emitted_at": f"2026-11-24T05:00:{n:02d}Z", "outputs": []}}


def _write(store: ProductStore, n: int, stage: str) -> None:
    store.write_record("01234", "001", name=_eid(n), stage=stage, record=_record(n, stage))


def test_what_live_has_and_the_namespace_lacks_is_counted_and_named():
    live = [_record(n, s) for n in range(1, 9) for s in ("detector1", "stage2")]
    partial = [_record(n, s) for n in (1, 2) for s in ("detector1", "stage2")]
    gap = coverage_gap(live, partial)
    assert gap and gap.exposures == tuple(_eid(n) for n in range(3, 9))
    assert {s: len(names) for s, names in gap.products.items()} == {"detector1": 6,
                                                                      "stage2": 6}
    text = "\n".join(gap.lines("r1"))
    assert "6 of live's 8 exposure(s) have no product in r1" in text
    assert "12 of live's 16 product(s) are not in r1" in text
    assert f"{_eid(3)}, {_eid(4)}, {_eid(5)}, {_eid(6)}, {_eid(7)} and 1 more" in text


def test_a_namespace_covering_live_or_more_has_no_gap():
    live = [_record(n, "detector1") for n in (1, 2)]
    assert not coverage_gap(live, live + [_record(3, "detector1")])
    assert not coverage_gap([], [])


def test_a_stage_the_replay_did_not_make_is_a_gap_though_every_exposure_is_there():
    """`replay --from stage2` makes no detector1 products: promoted, the rate
    files are no longer of record."""
    live = [_record(n, s) for n in (1, 2) for s in ("detector1", "stage2")]
    gap = coverage_gap(live, [_record(n, "stage2") for n in (1, 2)])
    assert gap.exposures == () and set(gap.products) == {"detector1"}


def test_a_record_whose_fields_are_no_text_is_read_not_raised():
    odd = {"work_id": "x", "event": {"stage": ["s"], "product_name": {"a": 1},
                                     "exposure_id": 7}}
    gap = coverage_gap([odd, "not a record", {"event": "text"}], [])
    assert gap.exposures == ("7",) and gap.live_products == 1


def test_a_partial_namespace_is_not_promoted_unless_allowed(tmp_path):
    """`calstream promote r1` of a replay of 2 exposures out of 4 swapped
    `current` without a word: the other two vanished from the products of
    record. Now it is refused, nothing written, until allowed by name."""
    store = ProductStore(tmp_path / "products")
    ensure_current(store)
    for n in range(1, 5):
        _write(store, n, "detector1")
    ns = store.for_namespace("r1")
    for n in (1, 2):
        _write(ns, n, "detector1")
    with pytest.raises(PartialPromotion) as refused:
        promote(store, "r1", reason="new flats", by="ops")
    assert refused.value.gap.exposures == (_eid(3), _eid(4))
    assert os.readlink(store.top / "current") == "."
    assert not (store.top / "promotions").exists()  # no record of a promotion not made
    message = promote(store, "r1", reason="new flats", by="ops", allow_partial=True)
    assert message["namespace"] == "r1" and message["records"] == 2
    assert os.readlink(store.top / "current") == "namespaces/r1"
    # Back to live is never partial: live is what the namespace is measured against.
    assert promote(store, "live", by="ops")["namespace"] == "live"


def test_a_namespace_covering_live_is_promoted_as_before(tmp_path):
    store = ProductStore(tmp_path / "products")
    ensure_current(store)
    for tree in (store, store.for_namespace("r1")):
        for n in (1, 2):
            _write(tree, n, "detector1")
    assert promote(store, "r1", by="ops")["previous"] == "live"
    assert os.readlink(store.top / "current") == "namespaces/r1"


def _publish(tree: ProductStore, n: int, content: bytes) -> Path:
    """A detector1 product of exposure ``n`` with its file, committed."""
    from calstream.steps.fitsfile import file_digest

    scratch = tree.scratch("01234", "001", f"w{n}")
    made = scratch / f"{_eid(n)}_rate.fits"
    made.write_bytes(content)
    final = tree.directory("01234", "001") / made.name
    record = _record(n, "detector1")
    record["event"]["outputs"] = [{"path": str(final), "digest": file_digest(made),
                                   "size": len(content), "suffix": "rate"}]
    tree.publish(scratch, "01234", "001", name=_eid(n), stage="detector1", record=record)
    return final


def test_a_namespace_whose_files_changed_since_their_records_is_not_promoted(tmp_path):
    """A record says what its files were when it was written; a file changed,
    replaced by a link or gone since is no product (docs/contract.md, "Reading
    the product tree"). promote compared records alone and switched `current`
    to such a tree: readers of record found no product there, or other bytes."""
    store = ProductStore(tmp_path / "products")
    ensure_current(store)
    ns = store.for_namespace("r1")
    for n in (1, 2, 3):
        _publish(store, n, b"SIMPLE live")
        _publish(ns, n, b"SIMPLE r1 " + bytes([n]))
    changed = ns.directory("01234", "001") / f"{_eid(1)}_rate.fits"
    changed.write_bytes(b"SIMPLE r1 X")  # same size, other bytes
    linked = changed.with_name(f"{_eid(2)}_rate.fits")
    (tmp_path / "elsewhere").write_bytes(linked.read_bytes())
    linked.unlink()
    linked.symlink_to(tmp_path / "elsewhere")  # the same bytes, but a link out
    with pytest.raises(PartialPromotion) as refused:
        promote(store, "r1", by="ops")
    assert refused.value.gap.damaged == (_eid(1), _eid(2))
    text = "\n".join(refused.value.gap.lines("r1"))
    assert "2 product(s) of r1 are not the files their records list" in text, text
    assert os.readlink(store.top / "current") == "."
    assert not (store.top / "promotions").exists()
    # Made again (a replay of them: the runner's lookup finds them not done),
    # the namespace is promoted.
    changed.unlink()
    linked.unlink()
    _publish(ns, 1, b"SIMPLE r1 \x01")
    _publish(ns, 2, b"SIMPLE r1 \x02")
    assert promote(store, "r1", by="ops")["namespace"] == "r1"


def test_a_link_where_promotion_records_go_takes_no_record_out_of_the_store(tmp_path):
    """Every write lies inside its root: a link someone made at
    `<products>/promotions` took the promotion's record wherever it pointed."""
    from calstream.daemon.doers.promotion import PromotionRefused

    store = ProductStore(tmp_path / "products")
    ensure_current(store)
    for tree in (store, store.for_namespace("r1")):
        _write(tree, 1, "detector1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store.top / "promotions").symlink_to(elsewhere)
    with pytest.raises(PromotionRefused, match="symbolic link"):
        promote(store, "r1", by="ops")
    assert list(elsewhere.iterdir()) == []
    assert os.readlink(store.top / "current") == "."
