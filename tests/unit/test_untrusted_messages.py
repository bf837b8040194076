"""Every record is untrusted: whatever bytes arrive, decoding either gives a
valid message or raises InvalidMessage (which becomes an ``invalid_message``
dead letter), never another exception; and a dead letter always fits."""

import json

import pytest

from calstream.topics import contract, dead_letters
from calstream.topics.contract import InvalidMessage


def _product_like(**over):
    body = {"schema": "calstream.hold", "schema_version": "1.1", "event_id": "a" * 64,
            "emitted_at": "2026-01-01T00:00:00Z", "exposure_id": "jw01234001001_02101_00001_nrcb1",
            "state": "held", "reason": "PLANNED", "since": "2026-01-01T00:00:00Z",
            "digest": "sha256:" + "0" * 64}
    body.update(over)
    return body


def test_the_good_message_decodes():
    assert contract.decode(json.dumps(_product_like()).encode(), expected="hold")


HOSTILE = {
    "invalid utf-8": b'{"schema": "calstream.hold", "x": "\xff\xfe"}',
    "5000-digit integer": b'{"schema": "calstream.hold", "n": ' + b"9" * 5000 + b"}",
    "31-digit integer": b'{"schema": "calstream.hold", "n": ' + b"1" * 31 + b"}",
    "deep nesting": b'{"schema": "calstream.hold", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "NaN literal": b'{"schema": "calstream.hold", "n": NaN}',
    "Infinity literal": b'{"schema": "calstream.hold", "n": -Infinity}',
    "float overflow": b'{"schema": "calstream.hold", "n": 1e999}',
    "duplicate keys": b'{"schema": "calstream.hold", "schema": "calstream.product"}',
    "oversize": b'{"schema": "calstream.hold", "pad": "' + b"x" * 1_100_000 + b'"}',
    "a list": b"[1, 2, 3]",
    "a string": b'"calstream.hold"',
    "empty": b"",
    "whitespace": b"   ",
    "truncated": b'{"schema": "calstream.hold", ',
    "nul bytes": b"\x00" * 64,
    "not a calstream schema": b'{"schema": "other.hold"}',
    "schema not a string": b'{"schema": ["calstream.hold"]}',
    "unknown type": b'{"schema": "calstream.bogus", "schema_version": "1.0"}',
    "version not a string": json.dumps(_product_like(schema_version=1.1)).encode(),
    "future major": json.dumps(_product_like(schema_version="2.0")).encode(),
    "path as exposure id": json.dumps(_product_like(exposure_id="../../etc/passwd")).encode(),
    "slash in exposure id": json.dumps(_product_like(exposure_id="jw0/../../x")).encode(),
    "newline in exposure id": json.dumps(_product_like(exposure_id="jw01\nFAKE LOG LINE")).encode(),
    "huge value in a typed field": json.dumps(_product_like(state="x" * 500_000)).encode(),
    # A lone surrogate (a \ud800 escape) in a field with an enum or a pattern:
    # the Rust validator cannot take it, and raised UnicodeEncodeError out of
    # decode (found by the door fuzz, tests/unit/test_door_fuzz_*.py).
    "lone surrogate in an enum": json.dumps(_product_like(state="held\ud800")).encode(),
    "lone surrogate in a pattern": json.dumps(_product_like(exposure_id="jw\udc80")).encode(),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bytes_raise_only_invalid_message(name):
    with pytest.raises(InvalidMessage) as info:
        contract.decode(HOSTILE[name], expected="hold")
    # The reason is for an operator and goes into a dead letter: bounded.
    assert 0 < len(str(info.value)) < 1000


def test_a_lone_surrogate_in_a_free_text_still_decodes():
    """The watcher's own bad_file dead letters carry a name that is not UTF-8
    as surrogate escapes: readable, like any free text."""
    body = {"schema": "calstream.dead_letter", "schema_version": "1.4", "event_id": "a" * 64,
            "emitted_at": "2026-01-01T00:00:00Z", "category": "bad_file", "reason": "r",
            "stage": "watcher", "attempts": 0, "path": "/inbox/jw\udcff_uncal.fits"}
    assert contract.decode(json.dumps(body).encode())["path"].endswith("\udcff_uncal.fits")


def test_a_product_event_with_a_lone_surrogate_is_refused_by_the_planners_intake():
    from calstream.daemon.deciders.product_intake import decode_product

    from .planner_stream import steps
    body = next(p for k, p, _ in steps() if k == "product").body
    with pytest.raises(InvalidMessage, match="stage"):
        decode_product(json.dumps({**body, "stage": "stage2\ud800"}).encode())


def test_tombstone_and_non_bytes():
    with pytest.raises(InvalidMessage, match="tombstone"):
        contract.decode(None)
    with pytest.raises(InvalidMessage, match="bytes"):
        contract.decode("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [
    ("product_name", "../" * 10 + "tmp/x"),
    ("product_name", "/etc/passwd"),
    ("product_name", ".hidden"),
    ("namespace", "../live"),
    ("crds_context", "../../x.pmap"),
])
def test_work_order_names_that_would_make_paths_are_refused(field, value):
    order = {"schema": "calstream.work_order", "schema_version": "1.1", "event_id": "b" * 64,
             "emitted_at": "2026-01-01T00:00:00Z", "work_id": "c" * 64, "stage": "stage2",
             "pipeline": "calwebb_image2", "product_name": "jw01234001001_02101_00001_nrcb1",
             "program": "01234", "association": {}}
    assert contract.decode(json.dumps(order).encode(), expected="work_order")
    with pytest.raises(InvalidMessage, match=field):
        contract.decode(json.dumps({**order, field: value}).encode(), expected="work_order")


def _dead_letter(original):
    return contract.build("dead_letter", contract.event_id("dead_letter", "t"),
                          category="invalid_message", reason="r", stage="planner",
                          attempts=0, original=original)


@pytest.mark.parametrize("value", [b"x" * 3_000_000, bytes(range(256)) * 20_000, b"{}", None])
def test_a_dead_letter_always_fits_under_the_producer_limit(value):
    original = dead_letters.original_record(topic="raw", partition=1, offset=7, key=b"k" * 10_000,
                                            value=value, timestamp_ms=1)
    encoded = contract.encode(_dead_letter(original))
    assert len(encoded) < contract.MAX_MESSAGE_BYTES // 4
    if value is not None:
        assert original["value_size"] == len(value)
        assert original["value_truncated"] == (len(value) > 48 * 1024)
        assert len(original["key"]) <= dead_letters.KEY_BUDGET


def test_a_small_original_is_kept_whole_and_utf8_is_not_split():
    snowmen = "\u2603".encode() * 30_000  # 90,000 bytes of 3-byte characters
    original = dead_letters.original_record(topic="raw", partition=0, offset=0, key=None,
                                            value=snowmen, timestamp_ms=None)
    assert original["value_encoding"] == "utf-8" and original["value_truncated"]
    assert set(original["value"]) == {"\u2603"}
    small = dead_letters.original_record(topic="raw", partition=0, offset=0, key=b"k",
                                         value=b'{"a": 1}', timestamp_ms=None)
    assert small["value"] == '{"a": 1}' and not small["value_truncated"]


def test_bounded_says_when_it_cut():
    assert dead_letters.bounded("abc", 10) == "abc"
    cut = dead_letters.bounded("y" * 5000, 100)
    assert len(cut) <= 100 and "more characters" in cut
