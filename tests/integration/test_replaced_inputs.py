"""An inbox file replaced after its arrival was admitted and before a worker
reads it: the worker calibrates only the bytes the arrival names.

The admission checks the file's digest against the arrival's, but the run
waits for a worker (behind the runs ahead of it: minutes at full frame),
and the worker opened whatever the path held by then. A file replaced in
that time by another exposure's bytes under the same name was calibrated,
and its product published under the arrival's name and digest: another
exposure's data as this one's. Now the worker checks the file's digest (or
the signature the admission read it under) before and after the run; bytes
that are not the arrival's are a dead letter saying so, never a product.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.steps.exposure import describe_exposure
from calstream.steps.fitsfile import file_digest
from calstream.topics import contract

from .support import announced_then_decided, daemon_config, products, running_daemon

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _arrival(path: Path) -> contract.Message:
    """The arrival the watcher would send for ``path`` as it is now."""
    info = describe_exposure(path)
    return contract.build(
        "arrival", contract.event_id("arrival", info.exposure_id, file_digest(path)),
        exposure_id=info.exposure_id, path=str(path), digest=file_digest(path),
        size=path.stat().st_size, detected_at=contract.utc_now(), source="watch",
        priority="live", header=info.header)


async def test_an_input_replaced_before_its_run_is_not_calibrated(tmp_path, broker, kit,
                                                                  unique_prefix, monkeypatch):
    # No watcher: the replacement must reach the worker, not the quarantine.
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["detector1"])
    mine, other = kit.uncal_files[0], kit.uncal_files[1]
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    delivered = cfg.inbox / mine.name
    shutil.copyfile(mine, delivered)
    arrival = _arrival(delivered)

    original = WorkerPool.run
    replaced: list[str] = []

    async def replaced_first(self, fn_path, kwargs, **options):
        if not replaced:  # admitted; now another exposure's bytes take its name
            swap = delivered.with_name(".swap")
            shutil.copyfile(other, swap)
            os.replace(swap, delivered)
            replaced.append(file_digest(delivered))
        return await original(self, fn_path, kwargs, **options)

    monkeypatch.setattr(WorkerPool, "run", replaced_first)
    async with running_daemon(cfg):
        seen = await announced_then_decided(cfg, arrival)
    assert replaced and replaced[0] != arrival["digest"]
    made = [p for p in products(seen) if p["outcome"] == "success"]
    assert made == [], f"another exposure's bytes were calibrated as {arrival['exposure_id']}"
    (letter,) = [m for m in seen if isinstance(m, contract.Message) and m.type == "dead_letter"]
    assert letter["category"] == "permanent_failure"
    assert "changed since" in letter["reason"] and arrival["digest"] in letter["reason"]
