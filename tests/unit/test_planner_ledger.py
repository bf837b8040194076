"""The planner's ledger: plans and holds outlive a broker that keeps topics in memory."""

import json
import logging
import os
from pathlib import Path

import pytest

from calstream.daemon.deciders import ledger_names
from calstream.daemon.doers.planner_ledger import PlannerLedger

from .test_directories_in_place_of_files import asides

NAME = "jw01234001001_02101_00001_nrcb1"


def test_a_plan_is_kept_once_and_a_hold_keeps_its_latest_state(tmp_path):
    ledger = PlannerLedger(tmp_path)
    ledger.keep("plans", {"plan_id": "p1", "source": "a.json", "exposures": []})
    ledger.keep("plans", {"plan_id": "p1", "source": "again.json", "exposures": []})
    ledger.keep("holds", {"exposure_id": "jw01234001001_02101_00001_nrcb1", "state": "held"})
    ledger.keep("holds", {"exposure_id": "jw01234001001_02101_00001_nrcb1", "state": "released"})
    assert [p["source"] for p in PlannerLedger(tmp_path).kept("plans")] == ["a.json"]
    assert [h["state"] for h in PlannerLedger(tmp_path).kept("holds")] == ["released"]
    assert not [p for p in (tmp_path / "planner").rglob("*") if p.name.endswith(".tmp")]


def test_a_torn_file_is_ignored_and_a_key_cannot_leave_the_ledger(tmp_path):
    ledger = PlannerLedger(tmp_path)
    (tmp_path / "planner" / "plans").mkdir(parents=True)
    (tmp_path / "planner" / "plans" / "torn.json").write_text('{"plan_id": "to')
    # Not UTF-8, and nested past the parser's recursion limit: ignored too,
    # where they raised out of the planner's start.
    (tmp_path / "planner" / "plans" / "latin.json").write_bytes(b'{"plan_id": "latin\xe9"}')
    (tmp_path / "planner" / "plans" / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert ledger.kept("plans") == []
    with pytest.raises(ValueError):
        ledger.keep("holds", {"exposure_id": "../../etc/x", "state": "held"})


def test_a_file_without_its_key_is_ignored(tmp_path):
    ledger = PlannerLedger(tmp_path)
    (tmp_path / "planner" / "holds").mkdir(parents=True)
    (tmp_path / "planner" / "holds" / "odd.json").write_text('{"state": "held"}')
    (tmp_path / "planner" / "holds" / "list.json").write_text('[1, 2]')
    (tmp_path / "planner" / "holds" / "other.json").write_text('{"exposure_id": "jw2"}')
    assert ledger.kept("holds") == []


def test_a_kept_record_that_is_not_a_valid_message_is_refused_by_the_contract(tmp_path):
    # What the planner checks before restoring a kept record: a file on disk
    # may be corrupt or forged like any input.
    from calstream.topics import contract

    ledger = PlannerLedger(tmp_path)
    ledger.keep("holds", {"exposure_id": "jw01234001001_02101_00001_nrcb1", "state": "held"})
    [body] = ledger.kept("holds")
    with pytest.raises(contract.InvalidMessage):
        contract.validate("hold", body)


def test_a_kept_file_is_read_as_a_message_is(tmp_path):
    """A key that is not text raised out of the planner's start (``in`` a set
    of ids: a list is unhashable), and Infinity, which json.loads takes, was
    re-published as no JSON any reader accepts (door fuzz)."""
    ledger = PlannerLedger(tmp_path)
    (tmp_path / "planner" / "holds").mkdir(parents=True)
    (tmp_path / "planner" / "holds" / "list.json").write_text('{"exposure_id": ["jw0"]}')
    (tmp_path / "planner" / "holds" / f"{NAME}.json").write_text(
        f'{{"exposure_id": "{NAME}", "n": Infinity}}')
    (tmp_path / "planner" / "holds" / "jw1.json").write_text(
        '{"exposure_id": "jw1", "exposure_id": "jw1"}')
    assert ledger.kept("holds") == []


def _hold(key: str = NAME) -> dict:
    return {"exposure_id": key, "state": "held"}


def test_only_files_named_for_a_valid_key_are_read(tmp_path, caplog):
    """A person's backup, an editor's swap file, a name with a newline: each
    skipped, and never opened (a FIFO among them would otherwise be); one
    warning counts them and names the first few."""
    ledger = PlannerLedger(tmp_path)
    ledger.keep("holds", _hold())
    holds = tmp_path / "planner" / "holds"
    for name in (f"{NAME}.json.bak", f".{NAME}.json.swp", "-x.json", "a b.json", "x\n.json",
                 ".json", f"{NAME}.JSON"):
        (holds / name).write_text(json.dumps(_hold("jw9")))
    os.mkfifo(holds / "fifo.json.old")  # opened, it would hold the reader
    with caplog.at_level(logging.WARNING):
        assert PlannerLedger(tmp_path).kept("holds") == [_hold()]
    assert caplog.text.count("not named <key>.json") == 1
    assert f"8 name(s) in {str(holds)!r}" in caplog.text
    assert repr("-x.json") in caplog.text and "and 3 more" in caplog.text
    assert (holds / "fifo.json.old").exists()  # skipped, not moved: no record's name


def test_thousands_of_stray_names_make_one_warning_per_directory(tmp_path, caplog):
    """A directory of strays (a copy made by hand, a backup tool's) warned
    about in one line at each start, not a line each."""
    ledger = PlannerLedger(tmp_path)
    ledger.keep("holds", _hold())
    holds = tmp_path / "planner" / "holds"
    for n in range(2000):
        (holds / f"{NAME}-{n:04d}.json.bak").write_text("{}")
    with caplog.at_level(logging.WARNING):
        assert PlannerLedger(tmp_path).kept("holds") == [_hold()]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, len(warned)
    assert "2000 name(s)" in warned[0] and "and 1995 more" in warned[0]
    assert repr(f"{NAME}-0000.json.bak") in warned[0]
    assert len(warned[0]) < 2000  # a few names, not all of them


def test_a_record_under_another_key_s_name_is_ignored(tmp_path):
    ledger = PlannerLedger(tmp_path)
    (tmp_path / "planner" / "holds").mkdir(parents=True)
    (tmp_path / "planner" / "holds" / f"{NAME}.json").write_text(json.dumps(_hold("jw2")))
    assert ledger.kept("holds") == []


def test_a_key_no_file_is_named_after_is_not_kept(tmp_path):
    ledger = PlannerLedger(tmp_path)
    for key in ("", ".hidden", "a/b", "x\ny", "a" * 231, 7):
        with pytest.raises(ValueError):
            ledger.keep("holds", _hold(key))
    assert not (tmp_path / "planner").exists()


def test_a_directory_at_a_record_s_name_is_moved_aside(tmp_path, caplog):
    ledger = PlannerLedger(tmp_path)
    ledger.keep("holds", _hold("jw1"))
    holds = tmp_path / "planner" / "holds"
    (holds / f"{NAME}.json" / "x").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        assert ledger.kept("holds") == [_hold("jw1")]  # read, and healed
    assert not (holds / f"{NAME}.json").exists()
    assert len(asides(holds, f"{NAME}.json")) == 1 and "moved aside" in caplog.text
    # Written over, too: a keep after a directory appeared again.
    (holds / f"{NAME}.json").mkdir()
    ledger.keep("holds", _hold())
    assert ledger.kept("holds") == [_hold(), _hold("jw1")]
    assert len(asides(holds, f"{NAME}.json")) == 2


def test_a_garbage_plan_file_is_written_again(tmp_path):
    """A plan is written once (its id is its digest); one that cannot be
    read is not "already kept"."""
    ledger = PlannerLedger(tmp_path)
    plan = {"plan_id": "a" * 64, "source": "a.json", "exposures": []}
    path = tmp_path / "planner" / "plans" / f"{'a' * 64}.json"
    path.parent.mkdir(parents=True)
    for garbage in (b'{"plan_id": "aa', b"\xff\xfe", b"[]", json.dumps({"plan_id": "b"}).encode()):
        path.write_bytes(garbage)
        ledger.keep("plans", plan)
        assert ledger.kept("plans") == [plan], garbage


@pytest.mark.parametrize("where", ["planner", "planner/holds"])
def test_a_file_where_the_ledger_s_directory_goes_is_moved_aside(tmp_path, where):
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text("a person's notes")
    ledger = PlannerLedger(tmp_path)
    assert ledger.kept("holds") == []  # no NotADirectoryError out of the start
    ledger.keep("holds", _hold())
    assert ledger.kept("holds") == [_hold()]
    [aside] = asides((tmp_path / where).parent, Path(where).name)
    assert aside.read_text() == "a person's notes"


@pytest.mark.parametrize("name, key", [
    (f"{NAME}.json", NAME), ("a" * 64 + ".json", "a" * 64), ("p1.json", "p1"),
    ("jw1-seg001+x.y.json", "jw1-seg001+x.y"), ("x.json.bak", None), (".x.json", None),
    (".json", None), ("x.JSON", None), ("x\n.json", None), ("x.json\n", None), ("é.json", None),
    ("a b.json", None), ("-a.json", None), ("a" * 231 + ".json", None)])
def test_the_key_a_file_name_gives(name, key):
    assert ledger_names.key_of(name) == key
    if key is not None:
        assert ledger_names.file_name(key) == name and ledger_names.key_problem(key) is None


def _gone_pid() -> int:
    """The pid of a process that ran and has ended (reaped: no process has it now)."""
    import subprocess
    import sys
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_a_killed_writer_s_temporary_is_removed_once_and_others_are_warned_about(
        tmp_path, caplog):
    """A write killed between writing and renaming (kill -9) leaves
    ``.<key>.json.<pid>.tmp``: removed with one info line when its pid runs
    no more, where every start warned about it. A live writer's, and other
    stray names, are left and warned about."""
    ledger = PlannerLedger(tmp_path)
    ledger.keep("holds", _hold())
    holds = tmp_path / "planner" / "holds"
    gone = _gone_pid()
    leftover = holds / f".{NAME}.json.{gone}.tmp"
    in_flight = holds / f".{NAME}.json.{os.getpid()}.tmp"  # this process: alive
    not_ours = holds / f".{NAME}.json.swp.{gone}.tmp"  # names no ledger key
    for path in (leftover, in_flight, not_ours):
        path.write_text('{"exposure_id": "jw')  # torn, as a kill leaves it
    with caplog.at_level(logging.INFO, logger="calstream.planner"):
        assert PlannerLedger(tmp_path).kept("holds") == [_hold()]
    assert not leftover.exists()
    assert in_flight.exists() and not_ours.exists()
    removed = [r for r in caplog.records if "removed" in r.getMessage()]
    assert len(removed) == 1 and removed[0].levelno == logging.INFO
    assert str(gone) in removed[0].getMessage()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and leftover.name not in warned[0], warned
    assert repr(in_flight.name) in warned[0] and repr(not_ours.name) in warned[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="calstream.planner"):
        PlannerLedger(tmp_path).kept("holds")
    assert not [r for r in caplog.records if "removed" in r.getMessage()]


def test_a_temporary_names_what_it_replaces_and_its_writer(tmp_path):
    from calstream.daemon.doers.durable_files import temporary_of, temporary_path

    assert temporary_of(temporary_path(tmp_path / f"{NAME}.json").name) == (
        f"{NAME}.json", os.getpid())
    for name in (f"{NAME}.json", f".{NAME}.json.tmp", f".{NAME}.json.0.tmp",
                 f".{NAME}.json.12a.tmp", f"{NAME}.json.12.tmp", f".{NAME}.json.12.tmp.bak"):
        assert temporary_of(name) is None, name


def test_a_start_keeps_only_the_holds_its_ledger_lacks_or_has_in_another_state(tmp_path):
    """doers/planner_disk_records.restore_from_disk: every hold the planner
    knows is on disk after its start, and one already there as it is, is not
    written again (a released hold stays a record: every hold ever made was
    written and synced again at every start, before the planner was ready)."""
    import types

    import anyio

    from calstream.daemon.doers.planner_disk_records import restore_from_disk
    from calstream.daemon.operations.metrics import Metrics

    ledger = PlannerLedger(tmp_path / "work")
    names = [f"jw01234001001_02101_0000{n}_nrcb1" for n in range(1, 6)]
    holds = {n: {"exposure_id": n, "state": "released", "since": "t"} for n in names}
    for n in names[:3]:
        ledger.keep("holds", holds[n])
    ledger.keep("holds", {**holds[names[3]], "state": "held"})  # an older state of it
    holds[names[0]] = {**holds[names[0]]}  # equal, another object: as read from the topic
    kept = []

    async def keep(topic, body):
        kept.append(body["exposure_id"])
        ledger.keep(topic, body)

    planner = types.SimpleNamespace(
        ledger=ledger, on_broker={"plans": set(), "holds": set(names)}, holds=holds,
        keep=keep, metrics=Metrics(),
        cfg=types.SimpleNamespace(products=tmp_path / "products", products_moved_from=[],
                                  max_attempts=2, retry_backoff=0.01, park_recheck_seconds=1))
    untouched = {n: (tmp_path / "work" / "planner" / "holds" / f"{n}.json").stat().st_ino
                 for n in names[:3]}
    anyio.run(restore_from_disk, planner)
    assert sorted(kept) == names[3:]
    assert {h["exposure_id"]: h for h in ledger.kept("holds")} == holds
    assert {n: (tmp_path / "work" / "planner" / "holds" / f"{n}.json").stat().st_ino
            for n in names[:3]} == untouched


def test_an_operator_s_read_of_the_holds_changes_nothing_in_the_ledger(tmp_path):
    """`calstream holds list` reads the planner's ledger (planner_holds_at)
    beside the running daemon, maybe from another pid namespace, where the
    writer of a temporary in flight looks gone: it must not remove it, nor
    move a file aside; the daemon's own read still tidies."""
    from calstream.daemon.doers.planner_disk_records import planner_holds_at

    ledger = PlannerLedger(tmp_path)
    ledger.keep("holds", _hold())
    holds = tmp_path / "planner" / "holds"
    in_flight = holds / f".{NAME}.json.{_gone_pid()}.tmp"  # its writer looks gone from here
    in_flight.write_text('{"exposure_id": "jw')
    odd = holds / "jw00001001001_02101_00002_nrca1.json"
    odd.mkdir()  # no regular file: the daemon's read would move it aside
    assert planner_holds_at(tmp_path) is not None  # read (its bare hold is no valid message)
    assert PlannerLedger(tmp_path).kept("holds", tidy=False) == [_hold()]
    assert in_flight.exists() and odd.is_dir()
    PlannerLedger(tmp_path).kept("holds")
    assert not in_flight.exists()
