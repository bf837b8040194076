"""A pointing update that comes before its exposure's detector1 product.

The live planner dead-lettered it ("unknown exposure") and the exposure,
arriving next, stayed held for good; a rebuild, which reads the pointing
updates after every product event, applied it: the two paths disagreed,
and a restart changed what the planner had decided. Now the update is kept
(its dead letter still says so at once) and applied when the product comes,
as the rebuild applies it; kept in the snapshot too. The records go through
the planner loop's own path (Planner._on_record), its publisher noting what
it is handed (no broker: what is tested is the decisions).
"""

from __future__ import annotations

import json
import time

import anyio
import pytest

from calstream.daemon.doers import planner_restore
from calstream.steps.synthetic.headers import exposure_id
from calstream.topics import contract
from calstream.topics.catalog import Topics

from . import planner_stream as stream
from .test_planner_record_runs import _planner, _Record

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


HEADER = stream.image("01001", 2, ENGQLPTG="PLANNED")
HELD = exposure_id(HEADER)


def _product() -> _Record:
    return _Record(Topics().name("products"), 0, contract.encode(
        stream.product("detector1", HEADER, stream.T0 + 10)))


def _update(action: str = "correct") -> _Record:
    return _Record(Topics().name("pointing"), 0, contract.encode(
        stream.pointing(HELD, action, stream.T0 + 5)))


def _orders_and_holds(publisher) -> tuple[set, set]:
    orders = {h[2] for h in publisher.handed if h[1].startswith("work.")}
    holds = {h[3] for h in publisher.handed if h[1] == "holds"}
    return orders, holds


async def _decided(tmp_path, name: str, records: list) -> tuple:
    planner, publisher = _planner(tmp_path, name)
    for record in records:
        await planner._on_record(record)
    await planner._settle()
    return planner, publisher


async def test_an_update_before_its_exposure_releases_it_as_one_after_it_does(
        tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: stream.T0 + 20)
    _, in_order = await _decided(tmp_path, "product-first", [_product(), _update()])
    planner, early = await _decided(tmp_path, "update-first", [_update(), _product()])

    orders, holds = _orders_and_holds(in_order)
    assert orders == {HELD}, "the corrected exposure is ordered"
    assert _orders_and_holds(early) == (orders, holds)
    assert planner.holds[HELD]["state"] == "released"
    assert len(planner.pointing_waiting) == 0
    # The early update's dead letter said at once that it waits.
    [letter] = [json.loads(h[3]) for h in early.handed if h[1] == "deadletter"]
    assert "unknown exposure" in letter["reason"] and "kept" in letter["reason"]


async def test_an_update_waiting_for_its_exposure_survives_a_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: stream.T0 + 20)
    first, _ = await _decided(tmp_path, "first", [_update("release")])
    assert len(first.pointing_waiting) == 1
    await planner_restore.take_snapshot(first)

    again, publisher = _planner(tmp_path, "first")  # the same work dir: its snapshot
    assert await anyio.to_thread.run_sync(planner_restore.load_snapshot, again)
    again.caught_up = True
    await again._on_record(_product())
    await again._settle()
    assert _orders_and_holds(publisher)[0] == {HELD}
    assert again.holds[HELD]["release"]["path"] == "operator"


def test_waiting_updates_are_bounded_and_kept_once():
    from calstream.daemon.deciders.holds import WaitingUpdates

    waiting = WaitingUpdates(capacity=2)
    updates = [contract.Message("pointing_update", stream.pointing(
        f"jw0100100100{n}_02101_00001_nrcb1", "release", stream.T0).body) for n in range(3)]
    for u in [*updates, updates[2]]:
        waiting.keep(u)
    assert len(waiting) == 2 and waiting.forgotten == 1
    assert waiting.take(updates[0]["exposure_id"]) == []
    assert [u.event_id for u in waiting.take(updates[2]["exposure_id"])] == [updates[2].event_id]
    restored = WaitingUpdates.from_body([updates[1].body, {"forged": True}, "x"])
    assert len(restored) == 1


def _skipped() -> _Record:
    """A detector1 product event of the exposure's first delivery: no science
    data (outcome ``skipped``, strun's exit 64), so no exposure the planner
    decides on; its redelivery (``_product``) is calibrated."""
    first = stream.product("detector1", HEADER, stream.T0 + 7, variant="first delivery")
    body = dict(first.body, outcome="skipped", reason="no science data", outputs=[],
                event_id=contract.event_id("product", first["work_id"], "skipped"))
    return _Record(Topics().name("products"), 0, contract.encode(
        contract.Message("product", body)))


async def test_an_update_waits_past_a_product_event_that_decides_no_exposure(
        tmp_path, monkeypatch):
    """A skipped detector1 event of the exposure (no science data: nothing
    for the planner to hold or release) took the update waiting for it, and
    judged it against an exposure still unknown: dropped. The calibrated
    redelivery that came next stayed held, live and after a restart from a
    snapshot, while a rebuild (the updates after every product event)
    released it. The update waits for a product the planner decides on."""
    monkeypatch.setattr(time, "time", lambda: stream.T0 + 20)
    _, rebuilt = await _decided(tmp_path, "as-a-rebuild", [_skipped(), _product(), _update()])
    planner, live = await _decided(tmp_path, "live", [_update(), _skipped(), _product()])

    assert _orders_and_holds(rebuilt)[0] == {HELD}, "the corrected exposure is ordered"
    assert _orders_and_holds(live) == _orders_and_holds(rebuilt)
    assert planner.holds[HELD]["state"] == "released"
    assert len(planner.pointing_waiting) == 0
