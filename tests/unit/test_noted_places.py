"""Where a daemon's newest product event went is noted by the publisher of a
daemon with the planner role (noted_places.py): its recovery judges the
products topic by that place, not by the topic being empty (one event sent
after a loss hid it)."""

from __future__ import annotations

import anyio

from calstream.daemon.doers.kafka.publisher import Publisher
from calstream.daemon.doers.noted_places import product_events_place
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .test_forged_work_records import _Producer
from .test_provenance_records import publish


def _product(tmp_path) -> contract.Message:
    _, record = publish(ProductStore(tmp_path / "products"))
    return contract.Message("product", record["event"])


def test_a_planner_daemon_notes_where_its_product_event_went(tmp_path):
    work = tmp_path / "work"
    publisher = Publisher(_Producer(), Topics(), Metrics(), role="planner+detector1",
                          work_dir=work)
    event = _product(tmp_path)
    anyio.run(publisher.publish, "products", "01234", event)
    assert product_events_place(work).newest() == {
        "event_id": event.event_id, "topic": Topics().name("products"), "partition": 0,
        "offset": 0}
    # Its planner's own publisher (another producer) keeps the same note.
    assert publisher.with_producer(_Producer()).product_place is publisher.product_place


def test_a_daemon_without_the_planner_role_notes_none(tmp_path):
    work = tmp_path / "work"
    publisher = Publisher(_Producer(), Topics(), Metrics(), role="detector1", work_dir=work)
    anyio.run(publisher.publish, "products", "01234", _product(tmp_path))
    assert product_events_place(work).newest() is None
