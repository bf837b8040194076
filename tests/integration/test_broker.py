"""The embedded broker and the topic catalog on a real tansu."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.topics.catalog import CATALOG

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def calstream(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "calstream.daemon.operations.cli", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def test_topics_create_and_list_against_a_broker(broker):
    prefix = f"t{os.getpid()}-cat."
    listed = calstream("topics", "list", "--kafka-bootstrap", broker, "--topic-prefix", prefix)
    assert listed.returncode == 0, listed.stderr
    assert f"{prefix}raw" in listed.stdout and " NO " in listed.stdout
    created = calstream("topics", "create", "--kafka-bootstrap", broker, "--topic-prefix", prefix)
    assert created.returncode == 0, created.stderr
    assert f"created {len(CATALOG)} topic(s)" in created.stdout
    again = calstream("topics", "create", "--kafka-bootstrap", broker, "--topic-prefix", prefix)
    assert "all existed" in again.stdout
    listed = calstream("topics", "list", "--kafka-bootstrap", broker, "--topic-prefix", prefix)
    rows = [line for line in listed.stdout.splitlines() if line.startswith(prefix)]
    assert len(rows) == len(CATALOG) and all(" yes " in r for r in rows), listed.stdout
    assert any(r.startswith(f"{prefix}holds ") and "compact" in r for r in rows)


def test_topics_without_a_broker_is_a_clear_error():
    out = calstream("topics", "list", env={"CALSTREAM_KAFKA_BOOTSTRAP": ""})
    assert out.returncode == 2 and "need a broker" in out.stderr


def test_broker_stops_when_its_parent_is_killed(tmp_path):
    script = (
        "import sys, time\n"
        "from calstream.daemon.doers.embedded_broker import EmbeddedBroker\n"
        f"b = EmbeddedBroker({str(tmp_path)!r}); b.start()\n"
        "print(b.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path)
    broker_pid = int(parent.stdout.readline())
    os.kill(broker_pid, 0)  # running
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(broker_pid, 0)
        except ProcessLookupError:
            break
        try:  # reap it if it is our grandchild turned zombie under init: not ours to reap
            os.waitpid(broker_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    else:
        os.kill(broker_pid, signal.SIGKILL)
        pytest.fail("tansu outlived its parent")


def test_broker_writes_only_inside_its_work_directory(tmp_path):
    cwd = tmp_path / "cwd"
    work = tmp_path / "work"
    cwd.mkdir()
    before = set(Path.home().iterdir())
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with EmbeddedBroker(work) as b:
            assert b.alive()
    finally:
        os.chdir(old)
    assert list(cwd.iterdir()) == []
    assert set(Path.home().iterdir()) == before
    assert {p.name for p in work.iterdir()} == {"broker"}


def test_a_file_at_the_broker_s_directory_is_moved_aside_and_the_broker_starts(tmp_path):
    (tmp_path / "broker").write_text("a person's notes")
    with EmbeddedBroker(tmp_path) as b:
        assert b.alive()
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("broker.unreadable-")]
    assert aside.read_text() == "a person's notes"
