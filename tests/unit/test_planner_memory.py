"""The planner's memory budget and when it starts again from its snapshot
(deciders/planner_memory.py), and how the doers read memory
(doers/process_memory.py)."""

from __future__ import annotations

import pytest

from calstream.daemon.deciders.planner_memory import GROWTH, budget_bytes, compaction_due
from calstream.daemon.doers import planner_compaction, planner_restore
from calstream.daemon.doers.process_memory import (
    container_limit_bytes,
    limit_files,
    resident_in_use_bytes,
)

MiB = 2**20


def test_a_configured_budget_wins_zero_turns_it_off_and_the_default_is_three_quarters():
    assert budget_bytes(512, 4096 * MiB) == 512 * MiB
    assert budget_bytes(0, 4096 * MiB) is None
    assert budget_bytes(None, 4096 * MiB) == 3072 * MiB
    assert budget_bytes(None, None) is None


@pytest.mark.parametrize("in_use, last, records, due", [
    (999 * MiB, 0, 50_000, False),           # under the budget
    (1000 * MiB, 0, 50_000, True),           # at it, never compacted
    (1000 * MiB, 0, 9_999, False),           # too few records since the start
    (1050 * MiB, 1000 * MiB, 50_000, False),  # over, but grew less than a tenth since
    (1100 * MiB, 1000 * MiB, 50_000, True),   # grew a tenth of the budget since
])
def test_compaction_is_due_over_the_budget_and_only_after_growth(in_use, last, records, due):
    assert compaction_due(in_use, 1000 * MiB, last, records, 10_000) is due
    assert compaction_due(in_use, None, last, records, 10_000) is False  # no budget
    assert GROWTH == 0.1


def test_the_container_limit_is_read_from_cgroup_v2_or_v1(tmp_path):
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert container_limit_bytes((v2, v1)) is None  # neither file: no container limit
    v1.write_text("2147483648\n")
    assert container_limit_bytes((v2, v1)) == 2 * 1024 * MiB
    v1.write_text("9223372036854771712\n")  # cgroup v1's "no limit"
    assert container_limit_bytes((v2, v1)) is None
    v2.write_text("max\n")
    assert container_limit_bytes((v2, v1)) is None
    v2.write_text("1073741824\n")
    assert container_limit_bytes((v2, v1)) == 1024 * MiB
    v2.write_text("garbage")
    assert container_limit_bytes((v2, v1)) is None


def test_this_process_uses_memory():
    assert resident_in_use_bytes() > 10 * MiB


class _Planner:
    standby = None  # one planner (no lease)

    def __init__(self, budget, records, last=0):
        self.memory_budget, self.records_seen, self.in_use_at_last_compaction = \
            budget, records, last


def test_a_planner_over_its_budget_is_told_to_start_again(monkeypatch):
    monkeypatch.setattr(planner_compaction.planner_memory, "MIN_RECORDS", 100)
    with pytest.raises(planner_compaction.Compaction) as raised:
        planner_compaction.compact_when_due(_Planner(MiB, 100))
    assert raised.value.budget == MiB and raised.value.in_use > 10 * MiB
    assert "MiB in use, budget 1 MiB" in str(raised.value)
    planner_compaction.compact_when_due(_Planner(MiB, 99))  # too few records: goes on
    planner_compaction.compact_when_due(_Planner(None, 10**6))  # no budget: goes on
    planner_compaction.compact_when_due(_Planner(2**50, 10**6))  # under the budget


class _Looping(_Planner):
    """What snapshot_due reads of a planner."""

    def __init__(self, budget, records):
        super().__init__(budget, records)
        self.last_snapshot = (__import__("time").monotonic(), records - 1)  # one new record
        self.caught_up, self.restored_from = True, {"snapshot": "x"}
        self.memory_checked_at, self.memory_over = 0.0, False
        self.snapshot_parking = type("NotParked", (), {"failures": 0})()


def test_a_planner_over_its_budget_takes_its_snapshot_at_once(monkeypatch):
    """Not at the next periodic snapshot: the planner would grow meanwhile."""
    monkeypatch.setattr(planner_compaction.planner_memory, "MIN_RECORDS", 100)
    assert planner_restore.snapshot_due(_Looping(MiB, 100))
    assert not planner_restore.snapshot_due(_Looping(None, 100))  # no budget
    assert not planner_restore.snapshot_due(_Looping(2**50, 100))  # under it
    over = _Looping(MiB, 100)
    with pytest.raises(planner_compaction.Compaction):
        planner_compaction.compact_when_due(over)


def test_a_systemd_units_limit_is_read_from_its_own_cgroup_and_its_ancestors(tmp_path):
    """A systemd unit's MemoryMax is written in its own cgroup, deep in the
    host's tree; the top of a cgroup v2 tree has no memory.max. Before, only
    the top was read: a unit's limit was never found, and the planner's
    budget and a run's memory bound fell back to none and the host's memory."""
    root, proc = tmp_path / "cgroup", tmp_path / "self-cgroup"
    unit = root / "system.slice" / "calstream@detector1.service"
    unit.mkdir(parents=True)
    proc.write_text("0::/system.slice/calstream@detector1.service\n")
    (unit / "memory.max").write_text(f"{32 * 1024 * MiB}\n")
    (unit.parent / "memory.max").write_text("max\n")
    files = limit_files(root, proc)
    assert files[:2] == (unit / "memory.max", unit.parent / "memory.max")
    assert container_limit_bytes(files) == 32 * 1024 * MiB
    (unit.parent / "memory.max").write_text(f"{16 * 1024 * MiB}\n")  # the slice's is smaller
    assert container_limit_bytes(limit_files(root, proc)) == 16 * 1024 * MiB
    # cgroup v1: the memory hierarchy's own line.
    v1 = root / "memory" / "process_api" / "c7ee"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{8 * 1024 * MiB}\n")
    proc.write_text("5:devices:/\n4:memory:/process_api/c7ee\n1:cpu:/\n")
    assert container_limit_bytes(limit_files(root, proc)) == 8 * 1024 * MiB
    # A container with its own cgroup namespace: "/", its limit at the top.
    proc.write_text("0::/\n")
    (root / "memory.max").write_text(f"{12 * 1024 * MiB}\n")
    assert container_limit_bytes(limit_files(root, proc)) == 12 * 1024 * MiB
    # What is no cgroup's path is not followed out of the tree.
    proc.write_text("0::/../../etc\n0::relative\n")
    assert limit_files(root, proc) == (root / "memory.max",
                                       root / "memory" / "memory.limit_in_bytes")
