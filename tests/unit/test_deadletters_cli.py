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
        for command in (["list"], ["redrive", "--reason", "x"]):
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
