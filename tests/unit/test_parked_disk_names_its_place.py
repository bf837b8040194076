"""A full disk parks work with the directory it was writing under named: in
the parked log line, on calstream_parked_items (``root``), in `calstream
status` and the console (docs/operations.md, "Infrastructure faults").
ENOSPC from a write or an fsync carries no file name, so the line read
"OSError: [Errno 28] No space left on device" and named nothing to free."""

from __future__ import annotations

import errno
import logging
from types import SimpleNamespace

from calstream.daemon.doers.parking import Parking
from calstream.daemon.operations import parked_causes
from calstream.daemon.operations.metrics import Metrics
from calstream.daemon.operations.status_summary import Endpoint, summarise_parked
from calstream.steps.failures import with_place

CFG = SimpleNamespace(max_attempts=2, retry_backoff=0.1, park_recheck_seconds=30.0)


def _parked_samples(metrics: Metrics) -> list[dict[str, str]]:
    return [s.labels for family in metrics.registry.collect() for s in family.samples
            if s.name == "calstream_parked_items" and s.value > 0]


def test_a_full_disk_with_no_path_in_its_error_parks_naming_the_directory(tmp_path, caplog):
    metrics = Metrics()
    parking = Parking(CFG, metrics, stage="planner", what="planner: keeping holds record x",
                      root=tmp_path / "planner")
    full = OSError(errno.ENOSPC, "No space left on device")  # as write(2) and fsync(2) give it
    with caplog.at_level(logging.WARNING, logger="calstream.parking"):
        for _ in range(CFG.max_attempts):
            parking.failed("disk_full", full)
    [line] = [r.getMessage() for r in caplog.records if "parked" in r.getMessage()]
    assert f"No space left on device (writing under {tmp_path / 'planner'})" in line
    assert _parked_samples(metrics) == [{"stage": "planner", "cause": "disk_full",
                                         "root": str(tmp_path / "planner")}]
    parking.resumed()
    assert _parked_samples(metrics) == []


def test_a_fault_that_is_no_disk_s_names_no_directory(tmp_path, caplog):
    metrics = Metrics()
    parking = Parking(CFG, metrics, stage="detector1", what="x", root=tmp_path)
    with caplog.at_level(logging.WARNING, logger="calstream.parking"):
        for _ in range(CFG.max_attempts):
            parking.failed("crds_unreachable", ConnectionError("CRDS server down"))
    assert str(tmp_path) not in caplog.text
    assert _parked_samples(metrics)[0]["root"] == ""


def test_an_error_that_names_its_path_is_left_as_it_is():
    named = "OSError: [Errno 28] No space left on device: '/data/products/01234/x.fits'"
    assert with_place(named, "/data/products") == named
    assert with_place("OSError: Not enough space on disk: requested 10, available 0",
                      "/data/products") == ("OSError: Not enough space on disk: requested 10, "
                                            "available 0 (writing under /data/products)")
    assert with_place("OSError: boom", None) == "OSError: boom"


def test_status_and_its_next_step_name_the_directory():
    daemon = Endpoint("http://d:9310", reachable=True, ready=True, samples=[
        ("calstream_parked_items", {"stage": "detector1", "cause": "disk_full",
                                    "root": "/data/products"}, 2.0),
        ("calstream_parked_items", {"stage": "stage2", "cause": "crds_lookup", "root": ""}, 1.0)])
    parked = summarise_parked([daemon])
    text = "\n".join(parked_causes.parked_lines(parked))
    assert "  detector1: 2 item(s), disk_full under /data/products: free space" in text
    assert "  stage2: 1 item(s), crds_lookup: complete the CRDS cache" in text


def test_a_park_whose_fault_changes_shows_the_fault_it_waits_on_now(tmp_path, caplog):
    """Parked on a full disk, then, the disk freed, on CRDS out of reach: the
    metric (and so CalstreamItemsParked, and status) kept saying disk_full
    under the directory an operator had already freed, while the work
    waited on CRDS."""
    metrics = Metrics()
    parking = Parking(CFG, metrics, stage="planner", what="planner: keeping holds record x",
                      root=tmp_path / "planner")
    for _ in range(CFG.max_attempts):
        parking.failed("disk_full", OSError(errno.ENOSPC, "No space left on device"))
    with caplog.at_level(logging.WARNING, logger="calstream.parking"):
        parking.failed("read_only", OSError(errno.EROFS, "Read-only file system"))
        parking.failed("read_only", OSError(errno.EROFS, "Read-only file system"))
    assert _parked_samples(metrics) == [{"stage": "planner", "cause": "read_only",
                                         "root": str(tmp_path / "planner")}]
    [line] = [r.getMessage() for r in caplog.records if "now parked on" in r.getMessage()]
    assert "now parked on read_only, no longer on disk_full" in line
    parking.failed("crds_unreachable", ConnectionError("CRDS server down"))
    assert _parked_samples(metrics) == [{"stage": "planner", "cause": "crds_unreachable",
                                         "root": ""}]
    parking.resumed()
    assert _parked_samples(metrics) == []
