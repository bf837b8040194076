"""One log format: a worker's lines in the daemon's format (JSON under
--json-logs), each with the running task's exposure id, stage and work id."""

import json
import logging

import anyio
import pytest

from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations import logs
from calstream.daemon.operations.metrics import Metrics

EXPOSURE = "jw01234001001_02101_00001_nrcb1"
WORK = "ab" * 32


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _worker_lines(capfd, json_logs: bool) -> list[str]:
    pool = WorkerPool(1, stage="t", metrics=Metrics(), classifier="tests.pool_tasks:classify",
                      env={**logs.worker_env(json_logs), logs.WORKER_LEVEL_ENV: "INFO"})
    pool.start()
    try:
        capfd.readouterr()
        await pool.run("tests.pool_tasks:chatty", {"message": "step jump running"}, timeout=60,
                       env=logs.task_env(exposure_id=EXPOSURE, stage="detector1", work_id=WORK))
        await pool.run("tests.pool_tasks:chatty", {"message": "between tasks"}, timeout=60)
    finally:
        pool.close()
    return [line for line in capfd.readouterr().err.splitlines()
            if "step jump" in line or "between tasks" in line]


@pytest.mark.anyio
async def test_worker_lines_are_json_with_the_task_fields(capfd):
    first, second = await _worker_lines(capfd, json_logs=True)
    doc = json.loads(first)
    assert doc["message"] == "step jump running" and doc["logger"] == "some.pipeline"
    assert (doc["exposure_id"], doc["stage"], doc["work_id"]) == (EXPOSURE, "detector1", WORK)
    assert "exposure_id" not in json.loads(second)  # the task's fields end with the task


@pytest.mark.anyio
async def test_worker_text_lines_match_the_daemon_format(capfd):
    first, _ = await _worker_lines(capfd, json_logs=False)
    assert f"some.pipeline [detector1 {EXPOSURE} {WORK[:12]}] step jump running" in first


def test_daemon_lines_carry_the_same_fields(capsys):
    logs.setup("INFO", json_logs=True)
    try:
        logging.getLogger("calstream.stage").info(
            "done", extra={"exposure_id": EXPOSURE, "stage": "stage2", "work_id": WORK})
        doc = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        logging.getLogger().handlers[:] = []
    assert (doc["exposure_id"], doc["stage"], doc["work_id"]) == (EXPOSURE, "stage2", WORK)


@pytest.mark.anyio
async def test_a_workers_flood_of_warnings_is_summarised(capfd):
    """A pipeline's warning repeated for every item of a forged file was one
    line each on the daemon's stderr; the log accounts for every one."""
    pool = WorkerPool(1, stage="t", metrics=Metrics(), classifier="tests.pool_tasks:classify",
                      env=logs.worker_env(False))
    pool.start()
    try:
        capfd.readouterr()
        await pool.run("tests.pool_tasks:warns_again_and_again",
                       {"message": "bad pixel", "times": 500}, timeout=60,
                       env=logs.task_env(exposure_id=EXPOSURE, stage="detector1", work_id=WORK))
    finally:
        pool.close()  # the worker's last summaries at its end
    lines = [line for line in capfd.readouterr().err.splitlines() if "bad pixel" in line]
    written = [line for line in lines if "suppressed" not in line]
    left_out = [int(line.split("suppressed ")[1].split()[0]) for line in lines
                if "suppressed" in line]
    assert left_out and len(written) + sum(left_out) == 500, lines[-3:]
    assert len(written) < 500


@pytest.mark.anyio
async def test_an_idle_workers_flood_summary_is_written_when_its_window_ends(capfd):
    """A worker wrote the summary of its pipelines' flood only after a later
    task or at its end: one idle after the flood (the night's last run) kept
    "suppressed N" unsaid for hours, the log showing the first lines only."""
    pool = WorkerPool(1, stage="t", metrics=Metrics(), classifier="tests.pool_tasks:classify",
                      env=logs.worker_env(False), initializer="tests.pool_tasks:short_flood_windows")
    pool.start()
    try:
        capfd.readouterr()
        await pool.run("tests.pool_tasks:warns_again_and_again",
                       {"message": "bad pixel", "times": 50}, timeout=60)
        seen: list[str] = []
        with anyio.move_on_after(30):  # the window is 2 s: its summary comes long before
            while not any("suppressed" in line for line in seen):
                seen += capfd.readouterr().err.splitlines()
                await anyio.sleep(0.2)
    finally:
        pool.close()
    summaries = [line for line in seen if "suppressed" in line and "bad pixel" in line]
    assert summaries and "suppressed 30 similar warning(s)" in summaries[0], seen[-3:]
