"""The deployment record: written atomically, found by commands, stale after a crash."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from calstream.daemon.operations import deployment
from calstream.daemon.operations.config import ConfigError, load


@pytest.fixture
def endpoint():
    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_commands_take_broker_and_endpoint_from_a_live_record(tmp_path, endpoint):
    daemon_cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": "h:9092",
                                           "topic_prefix": "p."})
    path = deployment.record(daemon_cfg, endpoint, embedded=True)
    assert json.loads(path.read_text())["embedded_broker"] is True
    assert not list(tmp_path.glob(".*.tmp"))  # written through a renamed temporary file

    cfg = deployment.discover(load(None, env={}, flags={"work_dir": tmp_path}))
    assert (cfg.kafka_bootstrap, cfg.metrics_address, cfg.topic_prefix) == \
        ("h:9092", endpoint, "p.")
    assert cfg.sources["kafka_bootstrap"] == f"deployment {path}"
    # What the command was given itself wins.
    given = load(None, env={}, flags={"work_dir": tmp_path, "topic_prefix": "mine."})
    assert deployment.discover(given).topic_prefix == "mine."
    explicit = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": "k:1"})
    assert deployment.discover(explicit) is explicit

    deployment.remove(daemon_cfg, endpoint)
    assert not path.exists()
    nothing = load(None, env={}, flags={"work_dir": tmp_path})
    assert deployment.discover(nothing).kafka_bootstrap is None


def test_a_record_whose_endpoint_is_gone_is_stale(tmp_path, endpoint):
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": "h:9092"})
    deployment.record(cfg, "127.0.0.1:1", embedded=False)
    with pytest.raises(ConfigError, match="stale .*127.0.0.1:1 does not answer"):
        deployment.discover(load(None, env={}, flags={"work_dir": tmp_path}))
    # Another daemon's record is not removed by this one.
    deployment.remove(cfg, endpoint)
    assert deployment.record_path(tmp_path).exists()


@pytest.mark.parametrize("doc", [
    {"pid": 1}, {"pid": "x", "metrics_address": "127.0.0.1:1"},
    {"pid": 1, "metrics_address": ["127.0.0.1:1"]},
    {"pid": 1, "metrics_address": "127.0.0.1:$HOME"},
    {"pid": 1, "metrics_address": "127.0.0.1:" + "9" * 30},
    {"pid": 1, "metrics_address": "127.0.0.1:1", "products": 7},
])
def test_a_record_no_daemon_wrote_is_no_record(tmp_path, doc):
    """A record is a file anyone may edit: one without an address, a pid that
    is no number, an address no URL can have, or a setting that is not text
    raised KeyError, ValueError or TypeError out of every command (door fuzz)."""
    deployment.record_path(tmp_path).write_text(json.dumps({"host": "elsewhere", **doc}))
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    try:
        found = deployment.discover(cfg)
    except ConfigError:  # stale: it names an endpoint that does not answer
        return
    assert found is cfg


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "calstream.deployment"]


def test_the_start_s_second_record_says_nothing_and_an_earlier_daemon_s_is_named(
        tmp_path, endpoint, caplog, monkeypatch):
    """A start writes the record twice. The second write logged "replacing
    ... left by an earlier daemon (None)" at every start, and asked the
    daemon's own endpoint over HTTP whether it was alive."""
    caplog.set_level("INFO", logger="calstream.deployment")
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": "h:9092"})
    monkeypatch.setattr(deployment, "_WRITTEN", set())  # a process that wrote nothing yet
    deployment.record(cfg, endpoint, embedded=False)
    asked = []
    monkeypatch.setattr(deployment, "stale_reason", lambda doc: asked.append(doc) or None)
    deployment.record(cfg, endpoint, embedded=False)
    assert _lines(caplog) == [] and asked == []

    # The same pid in a process that did not write it: a container's daemon
    # started again (its pid is the same each time), not another one running.
    monkeypatch.setattr(deployment, "_WRITTEN", set())
    deployment.record(cfg, endpoint, embedded=False)
    assert asked == []
    assert _lines(caplog) == [f"replacing {deployment.record_path(tmp_path)} left by an "
                              f"earlier daemon (process {os.getpid()} started again)"]


def test_another_running_daemon_s_record_is_warned_of_and_a_gone_one_s_named(
        tmp_path, endpoint, caplog):
    caplog.set_level("INFO", logger="calstream.deployment")
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": "h:9092"})
    path = deployment.record_path(tmp_path)
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "metrics_address": endpoint}))
    deployment.record(cfg, endpoint, embedded=False)
    assert _lines(caplog) == [f"{path} names another running daemon (pid 1): this one "
                              "replaces the record"]
    caplog.clear()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere",
                                "metrics_address": "127.0.0.1:1"}))
    deployment.record(cfg, endpoint, embedded=False)
    assert _lines(caplog) == [f"replacing {path} left by an earlier daemon (its operations "
                              "endpoint 127.0.0.1:1 does not answer)"]
