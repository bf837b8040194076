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


def test_a_rebuild_reads_only_the_provenance_records_new_or_replaced_since(tmp_path,
                                                                           monkeypatch):
    """Each rebuild (every 5 s while a page is open) read every provenance
    record of the store again: 2 s of the daemon's CPU for 20,000 of them,
    and a warning again for each unusable one each time. Only the records
    new or replaced since the last rebuild are read now."""
    import json
    import os

    from calstream.daemon.doers.product_store import ProductStore
    from tests.unit.test_console import _eid, _product

    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    provenance = cfg.products / "01234" / "001" / ".provenance"
    provenance.mkdir(parents=True)

    def write(n: int) -> None:
        temporary = provenance / f".{n}.tmp"
        temporary.write_text(json.dumps({"work_id": "a" * 64,
                                         "event": _product("stage2", _eid(n))}))
        os.replace(temporary, provenance / f"{n}.stage2.json")  # as the store commits one

    reads: list[str] = []
    real = ProductStore._provenance

    def counted(store, path, then, **how):
        reads.append(path.name)
        return real(store, path, then, **how)

    monkeypatch.setattr(ProductStore, "_provenance", counted)
    for n in (1, 2, 3):
        write(n)
    data = ConsoleData(cfg, lambda: [], ttl=-1.0)  # rebuilt at each look
    assert len(data.snapshot().observation("01234", "001").exposures) == 3 and len(reads) == 3
    reads.clear()
    write(4)
    write(2)  # replaced
    assert len(data.snapshot().observation("01234", "001").exposures) == 4
    assert sorted(reads) == ["2.stage2.json", "4.stage2.json"]
    reads.clear()
    (provenance / "1.stage2.json").unlink()
    assert set(data.snapshot().observation("01234", "001").exposures) == {
        _eid(2), _eid(3), _eid(4)} and reads == []
