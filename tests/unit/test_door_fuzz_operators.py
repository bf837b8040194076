"""The door fuzz (tests/door_fuzz.py) on what operators' tools read.

``calstream deadletters list|show|redrive`` and the console read the
deadletter topic, ``calstream holds`` and ``status`` the holds topic,
``calstream replay`` the raw and work topics, ``calstream subscribe`` the
products topic; and a redrive's note travels in a record header. Any of
them is a record anyone may write. Each mutant goes through the command's
own code (its decoding, filters, rows and pages): it is left out, or shown,
or replayed -- a row that prints on a UTF-8 terminal with no control
character, a page that encodes -- never a traceback. The ``promotions``
topic has no reader in calstream (subscribers only): no door to fuzz.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import unicodedata
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord

from calstream.daemon.deciders.holds import holds_shown
from calstream.daemon.deciders.record_places import GONE
from calstream.daemon.deciders.redrive_reading import unproven_original
from calstream.daemon.deciders.replay_selection import (
    Candidate,
    Selection,
    facts_of,
    replayed_message,
    select,
)
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.operations import console_pages, holds_view, status_render, subscribe
from calstream.daemon.operations.cli import deadletters, holds, redrive_sending
from calstream.daemon.operations.console_data import Snapshot, index_product_dead_letters
from calstream.daemon.operations.status_summary import BrokerView, Status
from calstream.topics import contract, dead_letters

from ..door_fuzz import budget, first_seed, fuzz
from .test_door_fuzz_planner import _orders_and_holds
from .test_forged_work_records import REQUEST


def _record(value: bytes | None, key: bytes | None = b"k", headers=()) -> ConsumerRecord:
    return ConsumerRecord("calstream.x", 0, 7, 0, 0, key, value, None, 1, 1, list(headers))


def _printable(line: str) -> None:
    """What a terminal gets: UTF-8, no control character (a forged line, an
    escape sequence repainting it)."""
    line.encode("utf-8")
    odd = [c for c in line if unicodedata.category(c) in ("Cc", "Cs")]
    assert not odd, f"control characters reach the terminal: {odd[:5]!r}"


def _status(**broker: list) -> None:
    """`calstream status` on what the broker view holds: every line printable."""
    view = BrokerView("127.0.0.1:1")
    for name, records in broker.items():
        setattr(view, name, records)
    for line in status_render.printable(Status(0.0, "calstream.", "calstream", [], {}, view)
                                        ).split("\n"):
        _printable(line)


def _dead_letter() -> dict:
    original = dead_letters.original_record(
        topic="calstream.raw", partition=1, offset=9, key=b"jw01234001001_02101_00001_nrcb1",
        value=b'{"schema": "calstream.arrival"}', timestamp_ms=1)
    return contract.build(
        "dead_letter", contract.event_id("dead_letter", "x"), category="bad_input",
        reason="input does not exist", stage="detector1", attempts=0,
        exposure_id="jw01234001001_02101_00001_nrcb1", path="/inbox/x_uncal.fits",
        original=original).body


def _snapshot(letters: list[dict]) -> Snapshot:
    return Snapshot(0.0, "live", {}, None, ["live"], "live", [], letters)


def test_dead_letters_mutated_are_left_out_or_shown():
    valid = _dead_letter()
    args = argparse.Namespace(refs=["1:2", "ab"], category=["bad_input"], reason_contains="x",
                              stage=["detector1"], exposure="jw", since="2h", until=None,
                              pending=False)
    everything = argparse.Namespace(refs=[], category=None, reason_contains=None, stage=None,
                                    exposure=None, since=None, until=None, pending=True)
    allowed = {"calstream.raw", "calstream.work.stage2"}

    def take(raw: bytes) -> str:
        try:
            body = contract.decode(raw, expected="dead_letter").body
        except contract.InvalidMessage:
            return "refused"
        letter = deadletters.DeadLetter("0:1", body)
        deadletters.selected([letter], args)
        for shown in deadletters.selected([letter], everything):
            _printable(deadletters.list_row(shown))
            json.dumps({"ref": shown.ref, **shown.body}, indent=1).encode()  # `show`
            value, problem = deadletters.original_bytes(body.get("original"), allowed)
            if problem is None:
                topic, key, value, headers = redrive_sending.redrive_record(letter, "ops", "fixed")
                assert topic in allowed and isinstance(value, bytes)
                # Checked against the record at its place before it is sent:
                # none there, or another one, is a reason, never a raise.
                assert unproven_original(body["original"], None)
                assert unproven_original(body["original"], GONE)
        _status(dead_letters=[body])
        index_product_dead_letters([body], {})
        console_pages.index(_snapshot([body]))  # the page, as bytes
        return "accepted"

    counts = fuzz("dead letter", valid, take, seed=first_seed(), cases=budget(300),
                  keys=["original", "topic", "key", "value", "value_encoding", "path"])
    assert counts.get("refused") and counts.get("accepted"), counts


def test_a_redrive_note_mutated_is_read_or_left_out():
    note = {"by": "ops", "reason": "cache resynced", "dead_letter": "a" * 64,
            "dead_letter_ref": "0:1", "at": "2026-01-01T00:00:00.000Z"}

    def take(raw: bytes) -> str:
        return "accepted" if dead_letters.redrive_note(raw) is not None else "refused"

    counts = fuzz("redrive note", note, take, seed=first_seed(), cases=budget(200))
    assert counts.get("refused") and counts.get("accepted"), counts


def test_holds_mutated_are_left_out_or_listed():
    valid = _orders_and_holds()["hold"][0].body
    tombstones = [_record(None, key) for key in (b"\xff\xfe", None, b"jw\x00", b"")]

    def take(raw: bytes) -> str:
        latest = holds_view.last_holds([_record(raw), *tombstones, _record(raw)])
        for h in latest.values():
            _printable(holds.hold_row(h))
        _status(holds=holds_view.held(holds_shown(latest, {})))  # each row marked
        return "accepted" if latest else "refused"

    counts = fuzz("hold (holds list)", valid, take, seed=first_seed(), cases=budget(200))
    assert counts.get("refused") and counts.get("accepted"), counts


@pytest.mark.parametrize("source", ["raw", "stage2"])
def test_a_replay_source_record_mutated_is_left_out_or_replayed(tmp_path, source):
    """`calstream replay`: what operations/replay.py does with the records it scans."""
    from calstream.steps.exposure import describe_exposure

    from .test_door_rules_agree import _arrival
    from .test_exposure import write

    store = ProductStore(tmp_path / "products")
    if source == "raw":
        valid, kind = _arrival(describe_exposure(write(tmp_path))).body, "arrival"
    else:
        valid, kind = _orders_and_holds()["work_order"][0].body, "work_order"
    selections = [Selection(), Selection(instruments={"nircam"}, programs={"01234"},
                                         since=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))]

    def take(raw: bytes) -> str:
        try:
            message = contract.decode(raw)
        except contract.InvalidMessage:
            return "refused"
        if message.get("schema") != f"calstream.{kind}":
            return "refused"
        found = [Candidate(0, 5, 1_800_000_000_000, message.body)]
        chosen = []
        for selection in selections:
            chosen, _, _ = select(found, selection, live_input=lambda p: store.namespace_of(
                Path(p)) in ("live", None))
        for c in chosen:
            replayed_message(c, source=source, topic=f"calstream.{source}",
                             request={**REQUEST, "from": source})
            json.dumps({"name": facts_of(c.message)[0]})
        return "accepted"

    counts = fuzz(f"replay from {source}", valid, take, seed=first_seed(), cases=budget(200))
    assert counts.get("refused") and counts.get("accepted"), counts


def test_a_product_event_mutated_is_left_out_or_written_by_subscribe(tmp_path):
    from . import planner_stream as stream

    valid = next(p for k, p, _ in stream.steps() if k == "product").body
    args = argparse.Namespace(program=["01001"], observation=None, stage=None, pipeline=None,
                              exposure=None, namespace=None, suffix=["rate"],
                              since="2020-01-01T00:00:00Z")
    filters = subscribe.Filters(args)

    def take(raw: bytes) -> str:
        try:
            event = contract.decode(raw, expected="product").body
        except contract.InvalidMessage:
            return "refused"
        _status(products=[event])
        if filters.match(event):
            _printable(subscribe.text_line(event))
            subscribe.write_event(tmp_path, event)
            assert all(p.parent == tmp_path for p in tmp_path.iterdir())
        return "accepted"

    counts = fuzz("product (subscribe)", valid, take, seed=first_seed(), cases=budget(200))
    assert counts.get("refused") and counts.get("accepted"), counts
