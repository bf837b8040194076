"""Times in records compared and shown as times, whatever their offset.

The contract takes any RFC 3339 offset (topics/times.py), and a record is
anyone's to write: compared as text, ``2026-11-24T09:00:00+05:00`` (04:00
UTC) came after ``2026-11-24T05:00:00Z``; shown by its first 19 characters,
it read 09:00 where the page says UTC. Each view below sorted or showed
such texts so.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from calstream.daemon.operations import console_pages, status_render
from calstream.daemon.operations.cli.deadletters import list_row
from calstream.daemon.operations.console_data import Snapshot, index_records
from calstream.daemon.operations.holds_view import held
from calstream.daemon.operations.status_collection import _decoded
from calstream.daemon.operations.status_letters import LetterTail
from calstream.daemon.operations.status_summary import BrokerView
from calstream.topics import contract

from .test_level3_state import T0, cal, dither, new_state, rate, stage3

EARLIER_BUT_LATER_AS_TEXT = "2026-11-24T09:00:00+05:00"  # 04:00 UTC
LATER = "2026-11-24T05:00:00Z"


def _eid(n: int) -> str:
    return f"jw01234001001_02101_{n:05d}_nrcb1"


def test_holds_are_listed_oldest_first_in_time():
    rows = {e: {"exposure_id": e, "state": "held", "since": since, "reason": "PLANNED"}
            for e, since in ((_eid(1), LATER), (_eid(2), EARLIER_BUT_LATER_AS_TEXT))}
    assert [h["exposure_id"] for h in held(rows)] == [_eid(2), _eid(1)]


def _product(n: int, stage: str, arrived: str, emitted: str) -> dict:
    return {"event": {"stage": stage, "program": "01234", "observation": "001",
                      "exposure_id": _eid(n), "product_name": _eid(n), "outcome": "success",
                      "arrived_at": arrived, "emitted_at": emitted, "previews": []}}


def test_the_console_orders_exposures_by_arrival_and_measures_to_the_last_product():
    index: dict = {}
    index_records([
        _product(1, "detector1", LATER, "2026-11-24T05:01:00Z"),
        _product(2, "detector1", EARLIER_BUT_LATER_AS_TEXT, "2026-11-24T09:01:00+05:00"),
        # Its stage-2 product came an hour after it arrived: the latency
        # runs to it, not to the detector1 one whose text sorts last.
        _product(2, "stage2", EARLIER_BUT_LATER_AS_TEXT, "2026-11-24T05:00:00Z"),
    ], index)
    obs = index[("01234", "001")]
    assert obs.exposures[_eid(2)].latency == 3600
    assert [e.exposure_id for e in obs.ordered()] == [_eid(2), _eid(1)]


def test_the_console_shows_times_in_utc_as_it_says():
    index: dict = {}
    index_records([_product(1, "detector1", EARLIER_BUT_LATER_AS_TEXT,
                            "2026-11-24T09:01:00+05:00")], index)
    snap = Snapshot(time.time(), "live", index, None, ["live"], "live", [], [], None)
    html = console_pages.observation_page(snap, index[("01234", "001")], {}).decode()
    assert ">2026-11-24 04:00:00<" in html and ">04:01:00<" in html
    assert ">2026-11-24 09:00:00<" not in html


def test_status_and_deadletters_list_show_utc_and_the_newest_letters_last():
    def record(n: int, emitted: str):
        letter = contract.build("dead_letter", f"{n:064x}", category="bad_file", stage="watcher",
                                attempts=1, reason=f"letter {n}", original=None)
        letter.body["emitted_at"] = emitted
        return SimpleNamespace(value=contract.encode(letter), topic="t", partition=0, offset=n,
                               headers=[])

    # Letter 1 is the newer (05:00Z); the other's text sorts after it.
    records = [record(1, LATER), record(2, EARLIER_BUT_LATER_AS_TEXT)]
    tail = LetterTail(BrokerView("h:1"))
    tail.add(records)
    assert [m["reason"] for m in tail.newest(1)] == ["letter 1"]  # the newest one
    shown = _decoded(records, "dead_letter", BrokerView("h:1"), 1)  # as products are read
    assert [m["reason"] for m in shown] == ["letter 1"]
    line = status_render._when(EARLIER_BUT_LATER_AS_TEXT, time.time())
    assert line.startswith("2026-11-24 04:00:00Z")
    body = {"emitted_at": EARLIER_BUT_LATER_AS_TEXT, "stage": "watcher", "category": "bad_file",
            "reason": "r", "path": "/inbox/x.fits"}
    row = list_row(SimpleNamespace(ref="0:1", body=body, redrives=[]))
    assert "2026-11-24T04:00:00Z" in row and "09:00:00" not in row


def test_a_stage_3_order_s_arrival_is_its_last_member_s_in_time():
    state = new_state()
    orders = []
    for n, arrived in ((1, LATER), (2, EARLIER_BUT_LATER_AS_TEXT)):
        header = dither(n, nexp=2)
        at = T0 + 10 * n
        orders += stage3(state.observe(rate(header, at), at))
        event = cal(header, at + 1)
        event.body["arrived_at"] = arrived
        orders += stage3(state.observe(event, at + 1))
    orders += stage3(state.tick(T0 + 10_000))
    assert len(orders) == 1 and orders[0]["arrived_at"] == LATER


def _stored(store, n: int, emitted_at) -> None:
    """A product committed to ``store`` whose event says ``emitted_at``."""
    from calstream.steps.fitsfile import file_digest
    name = _eid(n)
    scratch = store.scratch("01234", "001", f"w{n}")
    out = scratch / f"{name}_rate.fits"
    out.write_bytes(b"SIMPLE")
    final = store.directory("01234", "001") / out.name
    event = {"emitted_at": emitted_at, "product_name": name,
             "outputs": [{"path": str(final), "digest": file_digest(out), "size": 6}]}
    store.publish(scratch, "01234", "001", name=name, stage="detector1",
                  record={"work_id": f"w{n}", "event": event})


def test_the_store_s_records_and_what_a_lost_broker_gets_again_are_in_time_order(tmp_path):
    """Re-published oldest first (recovery_reads.every_record, replay's
    records): by text, the event of 04:00 UTC went after that of 05:00."""
    from calstream.daemon.doers.product_store import ProductStore
    from calstream.daemon.doers.recovery_reads import every_record
    store = ProductStore(tmp_path)
    _stored(store, 1, LATER)
    _stored(store, 2, EARLIER_BUT_LATER_AS_TEXT)
    _stored(store, 3, "not a time")  # first, and no error
    for records in (store.records(), every_record(store)):
        assert [r["event"]["product_name"] for r in records] == [_eid(3), _eid(2), _eid(1)]


def test_the_dead_letters_kept_are_put_back_in_time_order(tmp_path):
    from calstream.daemon.doers.dead_letter_ledger import DeadLetterLedger
    ledger = DeadLetterLedger(tmp_path)
    for n, when in ((1, LATER), (2, EARLIER_BUT_LATER_AS_TEXT), (3, None)):
        body = contract.build(
            "dead_letter", contract.event_id("dead_letter", "watcher", "bad_file", n),
            category="bad_file", reason="a test", stage="watcher", attempts=0,
            original=None, path=f"/inbox/file{n}.fits").body
        if when is None:
            body.pop("emitted_at", None)
        else:
            body["emitted_at"] = when
        assert ledger.keep_letter(body)
    assert [b["path"] for b in ledger.letters()] == [
        "/inbox/file3.fits", "/inbox/file2.fits", "/inbox/file1.fits"]
