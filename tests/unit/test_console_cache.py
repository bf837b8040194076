"""The console's snapshots are rebuilt when older than their ttl, counted on
the monotonic clock (daemon/operations/console_data.py): a step of the wall
clock back by an hour used to show the same snapshot for that hour."""

from __future__ import annotations

import time
from dataclasses import replace

from calstream.daemon.operations.config import load
from calstream.daemon.operations.console_data import ConsoleData, Snapshot


class Clock:
    def __init__(self):
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


def test_a_snapshot_is_rebuilt_after_its_ttl_whatever_the_wall_clock_did(tmp_path):
    clock = Clock()
    data = ConsoleData(load(None, env={}, flags={"work_dir": tmp_path}), lambda: [], ttl=5.0,
                       monotonic=clock)
    built = []
    # Built before the wall clock stepped back an hour: its wall time is an
    # hour in the future now.
    empty = Snapshot(time.time() + 3600, "live", {}, None, ["live"], None, [], [])

    def build(namespace):
        built.append(namespace)
        return replace(empty, namespace=namespace)
    data._build = build
    data.snapshot()
    clock.t += 4.0
    data.snapshot()
    assert built == ["live"]  # within the ttl: the same snapshot
    clock.t += 2.0
    data.snapshot()
    assert built == ["live", "live"]
