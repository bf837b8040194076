"""A broker that lost its product events gets a replay namespace's back too:
the planner plans a namespace's stage-2 and stage-3 work from them, and
`calstream subscribe --namespace N` streams them. Before, only the live
store's were re-published, and a replay's candidates lost their members."""

from __future__ import annotations

from pathlib import Path

from calstream.daemon.doers.durable_files import write_json_atomically
from calstream.daemon.doers.product_store import ProductStore

from .test_directories_in_place_of_files import _recover, broker_recovery
from .test_provenance_records import publish


def test_a_namespace_s_product_events_are_re_published_with_the_live_ones(tmp_path: Path,
                                                                         monkeypatch):
    store = ProductStore(tmp_path / "products")
    publish(store, work_id="a" * 64)
    publish(store.for_namespace("r1"), work_id="b" * 64)
    write_json_atomically(broker_recovery.marker_path(tmp_path / "work"), {})  # no broker asked
    sent = _recover(tmp_path, store, monkeypatch)
    assert sorted(m["work_id"] for _, m in sent) == ["a" * 64, "b" * 64]
