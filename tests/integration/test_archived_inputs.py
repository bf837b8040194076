"""An inbox file moved or deleted while detector1 runs on it: the product
stands; replaced under its name while the run goes: still refused.

Operations clean the inbox: an archiver moves or deletes an uncal file
once detector1 has it. The worker checks, after the run, that its input
still held the admitted bytes, and it looked for them under the inbox name:
a file deleted after jwst had read it made a good product a dead letter
(FileNotFoundError, "permanent"). Now the worker holds the input open from
its check before the run, jwst reads that open file (steps/admitted_input.py),
and the check after the run is of the open file: a name gone is no fault,
another file under the name is one (tests/integration/test_replaced_inputs.py
for a replacement before the run).
"""

from __future__ import annotations

import shutil

import pytest

from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.topics import contract

from ..direct_jwst import run_pipeline, steps_in_effect
from ..fidelity_compare import compare_records
from .support import announced_then_decided, daemon_config, products, running_daemon
from .test_replaced_inputs import _arrival

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TASK = "calstream.steps.detector1:run_detector1"


async def _run_archived(tmp_path, broker, kit, prefix, monkeypatch, archive: str):
    """One arrival through a detector1 daemon whose worker cleans the inbox
    (``archive``) as soon as jwst has read the file: (the arrival, the
    products and dead letters seen, the config)."""
    cfg = daemon_config(tmp_path, broker, prefix, roles=["detector1"])
    mine, other = kit.uncal_files[0], kit.uncal_files[1]
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    delivered = cfg.inbox / mine.name
    shutil.copyfile(mine, delivered)
    arrival = _arrival(delivered)
    swap = cfg.inbox / ".swap"
    shutil.copyfile(other, swap)

    original = WorkerPool.run

    async def archived(self, fn_path, kwargs, **options):
        if fn_path == TASK:
            fn_path = "tests.integration.inbox_archiver:detector1_then_archived"
            kwargs = {**kwargs, "archive": archive, "replacement": str(swap)}
        return await original(self, fn_path, kwargs, **options)

    monkeypatch.setattr(WorkerPool, "run", archived)
    async with running_daemon(cfg):
        seen = await announced_then_decided(cfg, arrival)
    return arrival, seen, cfg


def _letters(seen) -> list[contract.Message]:
    return [m for m in seen if isinstance(m, contract.Message) and m.type == "dead_letter"]


@pytest.mark.parametrize("archive", ["delete", "move"])
async def test_an_input_archived_after_jwst_read_it_keeps_its_product(
        tmp_path, broker, kit, unique_prefix, monkeypatch, archive):
    # unique_prefix is the test's name cut short: the same for both cases
    arrival, seen, cfg = await _run_archived(tmp_path, broker, kit, f"{archive}.{unique_prefix}",
                                             monkeypatch, archive)
    assert not (cfg.inbox / kit.uncal_files[0].name).exists()  # the archiver did clean it
    assert _letters(seen) == [], f"a good product became a dead letter: {_letters(seen)}"
    (event,) = products(seen)
    assert (event["outcome"], event["exposure_id"]) == ("success", arrival["exposure_id"])
    assert [i["digest"] for i in event["inputs"]] == [arrival["digest"]]
    # The products of the admitted bytes, as jwst makes them by hand.
    record = ProductStore(cfg.products).lookup(event["program"], event["observation"],
                                               name=event["exposure_id"], stage=event["stage"])
    direct = tmp_path / "direct"
    direct.mkdir()
    run_pipeline(event["pipeline"], kit.uncal_files[0], direct, steps_in_effect(record.event))
    compared, failures, extra = compare_records({event["stage"]: [{"event": event.body}]},
                                                direct, stages=[event["stage"]])
    assert compared and not failures and not extra, (failures, extra)


async def test_an_input_replaced_while_it_is_calibrated_is_still_refused(
        tmp_path, broker, kit, unique_prefix, monkeypatch):
    arrival, seen, _ = await _run_archived(tmp_path, broker, kit, unique_prefix,
                                           monkeypatch, "replace")
    made = [p for p in products(seen) if p["outcome"] == "success"]
    assert made == [], "a file replaced during its run was published as the admitted one"
    (letter,) = _letters(seen)
    assert letter["category"] == "permanent_failure"
    assert arrival["digest"] in letter["reason"]
