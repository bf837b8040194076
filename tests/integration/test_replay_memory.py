"""What `calstream replay --from raw` holds of the product store: it read
every live detector1 record into memory before choosing, some 8 KB each
(12 KB at the peak), whatever the selection: a mission's store (millions of
exposures) could not be replayed from at all. Its records are read one at a
time now, and only the arrivals the selection takes are kept."""

from __future__ import annotations

import copy
import gc
import json
import tracemalloc

import pytest

from calstream.daemon.deciders.replay_selection import Selection
from calstream.daemon.doers import kafka
from calstream.daemon.operations.config import load
from calstream.daemon.operations.replay import run_replay
from calstream.topics.catalog import Topics

from ..unit.test_replay_from_store import detector1

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
MORE = 800  # records added between the two measurements


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _add_records(cfg, first: int, n: int) -> None:
    """``n`` live detector1 records of exposures the topic lacks, as the
    stage writes them (plainly here: fsynced one by one they took seconds)."""
    base, place = detector1(1), cfg.products / "01234" / "001"
    (place / ".provenance").mkdir(parents=True, exist_ok=True)
    for i in range(first, first + n):
        event = copy.deepcopy(base)
        name = f"jw01234001001_02101_{i + 1:05d}_nrcb1"
        event["exposure_id"] = event["product_name"] = name
        event["inputs"][0]["path"] = f"{cfg.inbox}/{name}_uncal.fits"
        for output in event["outputs"]:
            output["path"] = str(place / f"{name}_{output['suffix']}.fits")
        (place / ".provenance" / f"{name}.detector1.json").write_text(
            json.dumps({"work_id": f"{i:064x}", "event": event}))


async def test_a_replay_of_a_few_exposures_holds_few_of_the_store_s_records(
        broker, unique_prefix, tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
    selection = Selection(exposures={"jw01234001001_02101_00001_nrcb1"})

    async def peak() -> int:
        gc.collect()
        tracemalloc.start()
        try:
            report = await run_replay(cfg, source="raw", namespace="n1", crds_context=None,
                                      selection=selection, dry_run=True)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert (report["selected"], report["from_store"]) == (1, 1), report

    _add_records(cfg, 0, 200)
    await peak()  # what a first replay brings in once (modules, the broker's client)
    before = await peak()
    _add_records(cfg, 200, MORE)
    grown = await peak() - before
    # Was some 10 KB more a record at the peak; now about 1 KB: the bounded
    # memo of parsed names (steps/naming.py: at most ~50 MiB) and the listing.
    assert grown < MORE * 3000, f"{grown / MORE:.0f} bytes more a record at the peak"
