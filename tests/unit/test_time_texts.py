"""A time text is parsed once while the planner takes and decides a fetch.

The planner checks a fetch's product events (up to TAKEN_AHEAD) before it
decides the first; the check parses emitted_at and arrived_at, and the
decision reads emitted_at again. Until session 44 the texts remembered
(64) were fewer than a fetch's, so each decision parsed its time again.
"""

from __future__ import annotations

import datetime as dt
import sys
import types
from pathlib import Path

from calstream.daemon.doers.planner_loop import TAKEN_AHEAD
from calstream.topics import contract, times

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_planner as bench  # noqa: E402


def test_a_fetchs_times_are_parsed_once(monkeypatch):
    parsed: list[str] = []

    class Counted(dt.datetime):
        @classmethod
        def fromisoformat(cls, text):
            parsed.append(text)
            return dt.datetime.fromisoformat(text)

    records = list(bench.program_records(7, TAKEN_AHEAD // 2))  # a fetch: detector1, stage2
    assert len(records) == TAKEN_AHEAD
    path = bench.RecordPath()
    times._times.clear()
    monkeypatch.setattr(times, "dt", types.SimpleNamespace(UTC=dt.UTC, datetime=Counted))
    for event, problems in path.intake.take_each(records, path.event_ids):
        assert problems == []
        path.state.observe(event, contract.parse_time(event["emitted_at"]).timestamp())
    assert len(parsed) == len(set(parsed))  # each text once
