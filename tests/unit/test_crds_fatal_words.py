"""crds's fatal exit, parked as crds_unreachable, says what crds said: its
FATAL line, not the exit status (the parked line read `SystemExit: -1`)."""

from __future__ import annotations

import sys

import anyio

from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.failures import error_text

from .test_failures import _raised

SAID = "(FATAL) CRDS server connection and cache load FAILED"


def test_the_text_of_crds_s_fatal_exit_is_its_fatal_line(tmp_path, monkeypatch):
    from crds.core import heavy_client

    monkeypatch.setenv("CRDS_PATH", str(tmp_path))  # a cache with nothing in it
    monkeypatch.setenv("CRDS_SERVER_URL", "https://jwst-serverless-mode.stsci.edu")
    fatal = _raised(lambda: heavy_client.load_server_info("jwst"))
    assert error_text(fatal).startswith(f"SystemExit: {SAID}"), error_text(fatal)
    # Any other SystemExit says its status, as before.
    assert error_text(_raised(lambda: sys.exit(-1))) == "SystemExit: -1"


def test_a_worker_reports_what_crds_said(tmp_path):
    async def run():
        pool = WorkerPool(1, stage="t", metrics=Metrics(),
                          classifier="calstream.steps.reference_integrity:classify_run_failure")
        pool.start()
        try:
            return await pool.run("tests.pool_tasks:crds_fatal", {"crds_path": str(tmp_path)},
                                  timeout=60)
        finally:
            pool.close()

    failure = anyio.run(run).failure
    assert failure.classification == "infrastructure:crds_unreachable"
    assert failure.error_type == "SystemExit" and failure.message.startswith(SAID), failure
