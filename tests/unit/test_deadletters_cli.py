"""calstream deadletters: selection and what can be redriven (no broker)."""

from __future__ import annotations

import argparse
import base64
import datetime as dt

from calstream.daemon.operations.cli.deadletters import (
    DeadLetter,
    list_row,
    original_bytes,
    parse_when,
    selected,
)
from calstream.topics import dead_letters

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def letter(ref, *, category="permanent_failure", stage="detector1", exposure="jw1_nrcb1",
           reason="calwebb_detector1 failed: CrdsLookupError", at="2026-12-01T11:00:00Z",
           redrives=()):
    body = {"event_id": ref.replace(":", "") * 32, "category": category, "stage": stage,
            "exposure_id": exposure, "reason": reason, "emitted_at": at,
            "original": {"topic": "calstream.raw", "key": exposure, "value": "{}"}}
    return DeadLetter(ref, body, tuple(redrives))


def args(**kw):
    base = dict(refs=[], category=None, reason_contains=None, stage=None, exposure=None,
                since=None, until=None, pending=False)
    return argparse.Namespace(**{**base, **kw})


LETTERS = [letter("0:1"), letter("0:2", category="bad_input", stage="stage2", exposure="jw2"),
           letter("1:1", reason="disk", at="2026-11-30T00:00:00Z", redrives=({"by": "x"},))]


def refs(**kw):
    return [x.ref for x in selected(LETTERS, args(**kw))]


def test_selection_by_each_filter():
    assert refs() == ["0:1", "0:2", "1:1"]
    assert refs(category=["bad_input"]) == ["0:2"]
    assert refs(stage=["detector1"]) == ["0:1", "1:1"]
    assert refs(exposure="jw2") == ["0:2"]
    assert refs(reason_contains="crdslookup") == ["0:1", "0:2"]
    assert refs(since="2026-12-01T00:00:00Z") == ["0:1", "0:2"]
    assert refs(until="2026-12-01T00:00:00+00:00") == ["1:1"]
    assert refs(refs=["0:2"]) == ["0:2"]
    assert refs(refs=["11"]) == ["1:1"]  # an event id prefix
    assert refs(pending=True) == ["0:1", "0:2"]


def test_ages_and_times():
    assert parse_when("2h", NOW) == NOW - dt.timedelta(hours=2)
    assert parse_when("30m", NOW) == NOW - dt.timedelta(minutes=30)
    assert parse_when("2026-12-01T10:00:00") == dt.datetime(2026, 12, 1, 10, tzinfo=dt.UTC)


def test_what_can_be_redriven():
    whole = dead_letters.original_record(topic="t", partition=0, offset=3, key=b"k",
                                         value=b'{"a": 1}', timestamp_ms=None)
    assert original_bytes(whole) == (b'{"a": 1}', None)
    binary = dead_letters.original_record(topic="t", partition=0, offset=3, key=b"k",
                                          value=b"\xff\x00", timestamp_ms=None)
    assert original_bytes(binary) == (b"\xff\x00", None)
    assert base64.b64decode(binary["value"]) == b"\xff\x00"
    cut = dead_letters.original_record(topic="t", partition=0, offset=3, key=b"k",
                                       value=b"x" * 100, timestamp_ms=None, budget=10)
    value, problem = original_bytes(cut)
    assert value is None and "truncated" in problem
    assert original_bytes(None)[1].startswith("the dead letter carries no original")


def test_a_forged_dead_letter_cannot_steer_a_redrive():
    from calstream.daemon.operations.cli.deadletters import redrivable_topics
    from calstream.topics.catalog import Topics

    allowed = redrivable_topics(Topics("p."))
    assert {"p.raw", "p.work.stage2", "p.products", "p.pointing"} <= allowed
    good = {"topic": "p.raw", "value": "{}", "value_encoding": "utf-8"}
    assert original_bytes(good, allowed) == (b"{}", None)
    for forged, why in [({**good, "topic": "other.raw"}, "not one calstream consumes"),
                        ({**good, "topic": "p.deadletter"}, "not one calstream consumes"),
                        ({**good, "value_encoding": "base64", "value": "!!"}, "not valid base64"),
                        ({**good, "value": 5}, "not text")]:
        value, problem = original_bytes(forged, allowed)
        assert value is None and why in problem


def test_a_forged_base64_value_is_refused_not_raised():
    """A character that is not ASCII in a value said to be base64 raised
    ValueError (not binascii.Error) out of `deadletters redrive` and `show`:
    one forged letter stopped the redrive of a whole selection."""
    for value in ("\u00e9", "QUJD\u00e9", "\uff21\uff21\uff21\uff21"):
        forged = {"topic": "t", "value": value, "value_encoding": "base64"}
        assert original_bytes(forged) == (None, "the original value is not valid base64")
        assert dead_letters.original_digest(forged) is None


def test_a_truncated_original_says_what_was_kept_in_words():
    """A letter whose `value_size` was absent said "None bytes kept in part"."""
    cut = dead_letters.original_record(topic="t", partition=0, offset=3, key=b"k",
                                       value=b"x" * 100, timestamp_ms=None, budget=10)
    assert "truncated: the dead letter keeps its first part only (of 100 bytes)" \
        in original_bytes(cut)[1]
    for size in (None, "100", True):
        forged = {**cut, "value_size": size}
        if size is None:
            del forged["value_size"]
        problem = original_bytes(forged)[1]
        assert "None" not in problem and "of a size it does not say" in problem, problem


def test_a_listed_row_carries_no_control_character_of_a_file_name():
    """A dead letter is read from a topic anyone may write, and its reason
    quotes text from outside: "\\x1b[2J" in a key cleared the terminal of
    whoever listed the dead letters."""
    forged = DeadLetter("0:9", {**letter("0:9").body, "exposure_id": None, "original": {
        "key": "x\x1b[2J\r_uncal.fits"}}, ())
    assert "\x1b" not in list_row(forged) and "\r" not in list_row(forged)
    assert "x\\x1b[2J\\x0d_uncal" in list_row(forged)


def test_a_time_or_category_that_means_nothing_is_a_usage_error(capsys):
    """``--since yesterday`` ended in a ValueError traceback (after reading the
    whole dead-letter topic); a misspelt category matched nothing, silently."""
    import pytest

    from calstream.daemon.operations.cli.main import build_parser

    parser = build_parser()
    for argv, expected in (
            (["--since", "yesterday"], "'yesterday' is neither an ISO time"),
            (["--until", "2h ago"], "'2h ago' is neither an ISO time"),
            (["--category", "permanent-failure"], "invalid choice: 'permanent-failure'")):
        for command in (["list"], ["redrive", "--reason", "CRDS cache resynced"]):
            with pytest.raises(SystemExit) as stop:
                parser.parse_args(["deadletters", *command, *argv])
            assert stop.value.code == 2
            assert expected in capsys.readouterr().err
    ok = parser.parse_args(["deadletters", "list", "--since", "2h", "--until",
                            "2026-12-01T10:00:00Z", "--category", "bad_file"])
    assert (ok.since, ok.until, ok.category) == ("2h", "2026-12-01T10:00:00Z", ["bad_file"])


def test_each_row_says_what_it_is_about():
    """A bad_file whose name is no exposure name has no exposure id and no
    original record: its row named nothing; the console showed the file."""
    from calstream.daemon.operations.cli.deadletters import subject

    assert subject(LETTERS[0].body) == "jw1_nrcb1"
    assert subject({"exposure_id": None, "original": {"key": "jw01234-o001_t001"}}) \
        == "jw01234-o001_t001"
    assert subject({"exposure_id": None, "original": None,
                    "path": "/inbox/notajwstname_uncal.fits"}) == "notajwstname_uncal.fits"
    assert subject({"exposure_id": None, "original": "forged", "path": None}) == ""


def test_a_redrive_header_nested_too_deeply_is_not_a_note():
    """A record header is as untrusted as its value: nesting too deep for
    json.loads raised RecursionError out of `deadletters list` (door fuzz)."""
    from calstream.topics.dead_letters import redrive_note

    assert redrive_note(b"[" * 100_000 + b"]" * 100_000) is None
    assert redrive_note(b'{"dead_letter": "a"}') == {"dead_letter": "a"}


def test_holds_list_takes_tombstones_of_any_key_and_escapes_its_rows():
    """A tombstone whose key is not UTF-8 (or absent) raised out of `holds
    list`, and a hold's reason reached the terminal raw (door fuzz)."""
    import json

    from aiokafka.structs import ConsumerRecord

    from calstream.daemon.operations.cli.holds import hold_row
    from calstream.daemon.operations.holds_view import last_holds

    hold = {"schema": "calstream.hold", "schema_version": "1.4", "event_id": "a" * 64,
            "emitted_at": "2026-01-01T00:00:00Z", "exposure_id": "jw01234001001_02101_00001_nrcb1",
            "state": "held", "reason": "PLANNED\x1b[2J\ud800", "since": "2026-01-01T00:00:00Z",
            "digest": "sha256:" + "0" * 64}
    records = [ConsumerRecord("t", 0, n, 0, 0, key, value, None, 1, 1, [])
               for n, (key, value) in enumerate([(b"k", json.dumps(hold).encode()),
                                                 (b"\xff", None), (None, None)])]
    [kept] = last_holds(records).values()
    row = hold_row(kept)
    row.encode("utf-8")
    assert "\x1b" not in row and "\\x1b[2J" in row


def test_a_dead_letter_with_a_lone_surrogate_is_listed_and_not_redriven():
    """Its key or value held a "\\ud800" escape: redrive raised
    UnicodeEncodeError encoding them (door fuzz)."""
    for key, value in (("k\udc80", "{}"), ("k", "{\ud800}")):
        original = dead_letters.original_record(topic="t", partition=0, offset=3, key=b"k",
                                                value=b"{}", timestamp_ms=None)
        value_, problem = original_bytes({**original, "key": key, "value": value})
        assert value_ is None and "lone surrogate" in problem


def test_plan_list_escapes_what_a_forged_plan_says():
    """`plan list` printed a plan's source and by raw: a record on the plans
    topic (anyone's to write) cleared the terminal and wrote lines of its own."""
    from calstream.daemon.operations.cli.plans import plan_row

    row = plan_row({"plan_id": "a" * 64, "emitted_at": "2026-01-01T00:00:00Z",
                    "source": "pool.csv\rFORGED\x1b]0;title\x07\ud800", "by": "ops\x1b[2J",
                    "exposures": [{}], "programs": ["01234"]})
    row.encode("utf-8")
    assert not any(c in row for c in "\x1b\r\x07")
    assert "\\x1b[2J" in row and "\\x0d" in row and "aaaaaaaaaaaa" in row


def test_a_forged_hold_cannot_pass_for_the_planners():
    """A hold record may carry fields of its own, and one that carried the
    view's own ("holds_topic", "source") was shown by `holds list`, status
    and the console as the planner's hold with a topic record that says
    otherwise: "[the holds topic says released by planner: not the planner's
    record]", where the planner holds nothing of it."""
    import json

    from aiokafka.structs import ConsumerRecord

    from calstream.daemon.deciders.holds import holds_shown
    from calstream.daemon.operations.holds_view import last_holds, not_the_planners

    hold = {"schema": "calstream.hold", "schema_version": "1.4", "event_id": "a" * 64,
            "emitted_at": "2026-01-01T00:00:00Z", "exposure_id": "jw01234001001_02101_00001_nrcb1",
            "state": "held", "reason": "PLANNED", "since": "2026-01-01T00:00:00Z",
            "digest": "sha256:" + "0" * 64, "source": "planner", "checked": True,
            "holds_topic": {"state": "released", "release": {"by": "planner"}}}
    latest = last_holds([ConsumerRecord("t", 0, 0, 0, 0, b"k", json.dumps(hold).encode(),
                                        None, 1, 1, [])])
    # No ledger to check it against (the stderr note says so), and a ledger
    # that holds nothing of it.
    for own, mark in ((None, ""), ({}, "the planner has none of this exposure")):
        [row] = holds_shown(latest, own).values()
        assert (row["source"], row["checked"]) == ("holds topic", own is not None)
        assert "holds_topic" not in row and mark in not_the_planners(row)
        assert "released" not in not_the_planners(row)
