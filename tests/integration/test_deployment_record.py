"""Commands find a running deployment from its work dir alone: no broker address,
no topic prefix, no metrics address given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calstream.daemon.operations.deployment import record_path

from .support import daemon_config, running_daemon

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]


def calstream(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALSTREAM_")}
    return subprocess.run([sys.executable, "-m", "calstream.daemon.operations.cli", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


async def test_commands_given_only_the_work_dir_find_the_deployment(tmp_path, broker,
                                                                    unique_prefix):
    import anyio

    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"])
    work = str(cfg.work_dir)
    assert not record_path(cfg.work_dir).exists()
    async with running_daemon(cfg) as daemon:
        doc = json.loads(record_path(cfg.work_dir).read_text())
        assert doc["kafka_bootstrap"] == broker and doc["metrics_address"] == daemon.ops.address
        assert doc["pid"] == os.getpid() and doc["topic_prefix"] == unique_prefix

        status = await anyio.to_thread.run_sync(
            lambda: calstream("status", "--work-dir", work, "--json"))
        assert status.returncode in (0, 1), status.stderr
        summary = json.loads(status.stdout)
        text = json.dumps(summary)
        assert broker in text and daemon.ops.address in text
        assert "not reachable" not in text.lower()

        holds = await anyio.to_thread.run_sync(lambda: calstream("holds", "list", "--work-dir",
                                                                  work))
        assert holds.returncode == 0 and "no exposures held" in holds.stdout, holds.stderr
        plans = await anyio.to_thread.run_sync(lambda: calstream("plan", "list", "--work-dir",
                                                                  work))
        assert plans.returncode == 0, plans.stderr
        shown = await anyio.to_thread.run_sync(
            lambda: calstream("config", "show", "--work-dir", work, "--json"))
        rows = {r["setting"]: r for r in json.loads(shown.stdout)}
        assert rows["kafka_bootstrap"]["value"] == broker
        assert rows["kafka_bootstrap"]["source"] == f"deployment {record_path(cfg.work_dir)}"
        assert rows["topic_prefix"]["value"] == unique_prefix
    # A clean exit removes the record: nothing points at a stopped daemon.
    assert not record_path(cfg.work_dir).exists()
    gone = calstream("holds", "list", "--work-dir", work)
    assert gone.returncode == 2 and "--kafka-bootstrap" in gone.stderr


def test_a_record_left_by_a_crash_is_stale(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    work = tmp_path / "work"
    work.mkdir()
    import socket

    record_path(work).write_text(json.dumps({
        "pid": int(dead), "host": socket.gethostname(), "kafka_bootstrap": "127.0.0.1:1",
        "metrics_address": "127.0.0.1:1", "topic_prefix": "calstream."}))
    for args in (["status"], ["holds", "list"], ["replay", "--dry-run", "--namespace", "n1"],
                 ["subscribe"], ["promote", "n1"], ["config", "show"]):
        result = calstream(*args, "--work-dir", str(work))
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "stale" in result.stderr and f"process {dead} is not running" in result.stderr
