"""The planner's ledger: plans and holds outlive a broker that keeps topics in memory."""

import pytest

from calstream.daemon.doers.planner_ledger import PlannerLedger


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
    (tmp_path / "planner" / "plans" / "latin.json").write_bytes(b'{"plan_id": "\xe9"}')
    (tmp_path / "planner" / "plans" / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert ledger.kept("plans") == []
    with pytest.raises(ValueError):
        ledger.keep("holds", {"exposure_id": "../../etc/x", "state": "held"})


def test_a_file_without_its_key_is_ignored(tmp_path):
    ledger = PlannerLedger(tmp_path)
    (tmp_path / "planner" / "holds").mkdir(parents=True)
    (tmp_path / "planner" / "holds" / "odd.json").write_text('{"state": "held"}')
    (tmp_path / "planner" / "holds" / "list.json").write_text('[1, 2]')
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
    (tmp_path / "planner" / "holds" / "inf.json").write_text(
        '{"exposure_id": "jw01234001001_02101_00001_nrcb1", "n": Infinity}')
    (tmp_path / "planner" / "holds" / "twice.json").write_text(
        '{"exposure_id": "jw1", "exposure_id": "jw2"}')
    assert ledger.kept("holds") == []
