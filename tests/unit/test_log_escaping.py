"""Logs cannot be forged: a name from outside never starts a line of its own."""

import logging
import sys

from calstream.daemon.operations.logs import TextFormatter, escape_controls


def _record(msg, *args, exc_info=None, **extra):
    record = logging.LogRecord("calstream.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    for key, value in {"stage": "-", "exposure_id": "-", **extra}.items():
        setattr(record, key, value)
    return record


def test_a_newline_in_a_name_stays_on_one_line():
    name = "jw01234_evil\n12:00:00 INFO    calstream.daemon [- -] all good\x1b[2J_uncal.fits"
    line = TextFormatter().format(_record("quarantined %s", name, exposure_id=name))
    assert "\n" not in line and "\x1b" not in line
    assert "\\n12:00:00 INFO" in line and "\\x1b[2J" in line


def test_a_traceback_cannot_pass_for_a_record():
    try:
        raise ValueError("bad\n12:00:00 INFO    forged line")
    except ValueError:
        text = TextFormatter().format(_record("failed", exc_info=sys.exc_info()))
    first, *rest = text.split("\n")
    assert first.endswith("failed") and rest and all(line.startswith("  | ") for line in rest)


def test_printable_text_is_unchanged():
    assert escape_controls("jw01234001001_02101_00001_nrcb1 ümlaut ok") == \
        "jw01234001001_02101_00001_nrcb1 ümlaut ok"


def test_a_name_that_is_not_utf8_is_shown_by_its_bytes():
    """A file name that is not UTF-8 reaches Python as surrogates: raw, the
    line could not be written as UTF-8 (a quarantine note raised)."""
    name = (b"jw01234_\xff\xc3(_uncal.fits").decode("utf-8", "surrogateescape")
    shown = escape_controls(name + " \ud800")
    assert shown == "jw01234_\\xff\\xc3(_uncal.fits \\ud800"
    assert shown.encode("utf-8")


def test_calstream_status_prints_a_forged_dead_letter_escaped():
    """A dead letter's reason reached the terminal raw in `calstream status`:
    an escape sequence, or a lone surrogate that failed the write (door fuzz)."""
    from calstream.daemon.operations.status_render import printable
    from calstream.daemon.operations.status_summary import BrokerView, Status

    letter = {"emitted_at": "2026-01-01T00:00:00Z", "stage": "detector1",
              "category": "bad_input", "reason": "x\x1b[2J\ud800", "exposure_id": "jw\x07"}
    shown = printable(Status(0.0, "calstream.", "calstream", [], {},
                             BrokerView("b", dead_letters=[letter])))
    shown.encode("utf-8")
    assert "\x1b" not in shown and "\x07" not in shown and "\\x1b[2J\\ud800" in shown


def test_a_line_break_in_a_record_does_not_make_a_status_line_of_its_own():
    """A file named "jw\n  <a product's line>" was rejected at the door, and
    `calstream status` printed its name's line break as one: escaping each line
    after the join never saw it, so the second half passed for a product."""
    from calstream.daemon.operations.status_render import printable
    from calstream.daemon.operations.status_summary import BrokerView, Status

    forged = "jw\n  2026-01-01 00:00:00Z (1s ago)  stage2  success  jw01234001001_02101_00001_nrcb1"
    letter = {"emitted_at": "2026-01-01T00:00:00Z", "stage": "watcher",
              "category": "bad_file", "reason": "not a JWST exposure name",
              "path": f"/inbox/{forged}"}
    shown = printable(Status(0.0, "calstream.", "calstream", [], {},
                             BrokerView("b", dead_letters=[letter])))
    lines = shown.split("\n")
    mine = [line for line in lines if "watcher/bad_file" in line]
    assert len(mine) == 1 and "watcher/bad_file  jw\\n  2026-01-01" in mine[0]
    assert not any(line.startswith("  2026-01-01 00:00:00Z (1s ago)  stage2") for line in lines)


def test_a_megabyte_key_makes_a_line_of_bounded_length():
    """A dead letter's key and reason were logged whole: a forged 1 MB key
    was a 1 MB line (the dead letter itself bounds them)."""
    key = "jw01234" + "A" * 1_000_000
    reason = "bad header: " + "B" * 1_000_000
    line = TextFormatter().format(_record("dead letter [%s/%s] %s: %s", "detector1",
                                          "invalid_message", key, reason, exposure_id=key))
    assert len(line) < 6000, len(line)
    assert "more characters]" in line and "[- jw01234AAA" in line


def test_a_json_line_is_bounded_too():
    import json

    from calstream.daemon.operations.logs import JsonFormatter

    key = "jw01234" + "A" * 1_000_000
    try:
        raise ValueError("C" * 1_000_000)
    except ValueError:
        line = JsonFormatter().format(_record("dead letter %s", key, exc_info=sys.exc_info(),
                                              exposure_id=key, work_id=key))
    doc = json.loads(line)
    assert len(line) < 30_000, len(line)
    assert doc["message"].endswith("more characters]") and len(doc["exposure_id"]) < 300


def test_a_traceback_of_a_huge_message_is_bounded():
    try:
        raise ValueError("bad\n" * 200_000)
    except ValueError:
        text = TextFormatter().format(_record("failed", exc_info=sys.exc_info()))
    assert len(text) < 90_000 and "more characters]" in text  # was 1.6 MB


def test_calstream_status_prints_a_record_s_megabyte_of_text_bounded():
    """A forged dead letter's key, a product's name, who released a hold: up
    to the megabyte a message may be, and `calstream status` printed each
    whole (its reasons alone were cut)."""
    from calstream.daemon.operations.status_render import printable
    from calstream.daemon.operations.status_summary import BrokerView, Status

    letter = {"emitted_at": "2026-01-01T00:00:00Z", "stage": "s" * 300_000,
              "category": "invalid_message", "reason": "not json", "exposure_id": None,
              "original": {"key": "k" * 900_000}}
    shown = printable(Status(0.0, "calstream.", "calstream", [], {},
                             BrokerView("b", dead_letters=[letter])))
    assert max(len(line) for line in shown.splitlines()) < 2000
    assert "more characters]" in shown


def test_deadletters_and_plans_rows_are_bounded_as_status_lines():
    """A dead letter's stage and a plan's source or author are free text, up
    to the megabyte a record may be: `deadletters list` and `plan list`
    printed them whole."""
    from types import SimpleNamespace

    from calstream.daemon.operations.cli.deadletters import list_row
    from calstream.daemon.operations.cli.plans import plan_row

    body = {"emitted_at": "2026-01-01T00:00:00Z", "stage": "s" * 300_000, "category": "bad_file",
            "reason": "r", "path": "/inbox/x"}
    plan = {"plan_id": "p" * 64, "emitted_at": "2026-01-01T00:00:00Z", "source": "s" * 300_000,
            "by": "b" * 300_000, "exposures": [], "programs": ["01234"]}
    for row in (list_row(SimpleNamespace(ref="0:1", body=body, redrives=[])), plan_row(plan)):
        assert len(row) < 2000 and "more characters]" in row
