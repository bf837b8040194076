"""`calstream status --metrics-url` given an address where no daemon answers
but something else does (real sockets on loopback): the endpoint is shown
unreachable or unreadable, never a traceback of the command."""

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from calstream.daemon.operations.status_collection import read_endpoint
from calstream.daemon.operations.status_summary import BrokerView, Status


@contextlib.contextmanager
def listener(answer: bytes):
    """A loopback port whose every connection gets ``answer``, then is closed."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


@contextlib.contextmanager
def http_server(body: bytes):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_service_that_speaks_no_http_is_an_endpoint_unreachable():
    """An SSH banner where the HTTP status line goes: BadStatusLine raised out."""
    with listener(b"SSH-2.0-OpenSSH_9.2\r\n") as address:
        ep = read_endpoint(address, timeout=5)
    assert not ep.reachable and ep.error.startswith("metrics unreachable: BadStatusLine"), ep


def test_metrics_that_are_not_utf8_are_not_prometheus_text():
    """Bytes that are not UTF-8 at /metrics: UnicodeDecodeError raised out."""
    with http_server(b"\xff\xfe not text") as address:
        ep = read_endpoint(address, timeout=5)
    assert not ep.reachable and ep.error == ("/metrics is not Prometheus text: bytes that are "
                                             "not UTF-8"), ep


def test_an_address_no_url_can_have_is_an_endpoint_unreachable():
    """`--metrics-url calib-01:metrics`: http.client's InvalidURL raised out."""
    ep = read_endpoint("127.0.0.1:metrics", timeout=5)
    assert not ep.reachable and ep.error.startswith("metrics unreachable: InvalidURL"), ep


def test_status_shows_a_dead_letter_sent_again_once():
    """A planner restarted without its snapshot sends a refusal again under
    the same event id: status and the console list it once, its latest record."""
    from types import SimpleNamespace

    from calstream.daemon.operations.status_collection import _decoded
    from calstream.daemon.operations.status_summary import BrokerView
    from calstream.topics import contract

    def letter(event_id: str, at: str) -> bytes:
        return contract.encode(contract.build(
            "dead_letter", event_id, category="bad_input", reason="r", stage="planner",
            attempts=0, exposure_id="jw01234001001_02101_00001_nrcb1", path=None, digest=None,
            emitted_at=at))

    first, other = "a" * 64, "b" * 64
    records = [SimpleNamespace(topic="t", partition=0, offset=o, value=v) for o, v in enumerate(
        [letter(first, "2026-12-01T10:00:00Z"), letter(other, "2026-12-01T10:30:00Z"),
         letter(first, "2026-12-01T11:00:00Z")])]
    view = BrokerView("b:1")
    shown = _decoded(records, "dead_letter", view, 10)
    assert [(m["event_id"], m["_offset"]) for m in shown] == [(other, 1), (first, 2)]
    assert view.unreadable == 0


def test_a_broker_that_refuses_the_connection_is_named_with_its_error_type_once():
    """aiokafka's errors put their type name in their text: status printed
    `KafkaConnectionError: KafkaConnectionError: Unable to bootstrap ...`."""
    import socket as _socket

    import anyio

    from calstream.daemon.operations.config import load
    from calstream.daemon.operations.status_collection import collect

    with _socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load(None, env={}, flags={"kafka_bootstrap": f"127.0.0.1:{port}"})
    error = anyio.run(lambda: collect(cfg, [], timeout=10)).broker.error
    assert error.startswith("KafkaConnectionError: Unable to bootstrap"), error


@contextlib.contextmanager
def daemon_like(answers: dict[str, tuple[int, bytes]], *, drip: float | None = None):
    """A loopback HTTP server answering each path of ``answers`` (code, body);
    ``drip``: the body a byte at a time, one each ``drip`` seconds."""
    from http.server import ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            code, body = answers.get(self.path, (404, b"no\n"))
            self.send_response(code)
            self.end_headers()
            with contextlib.suppress(OSError):
                for i in range(len(body)) if drip else ():
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(drip)
                if not drip:
                    self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


_METRICS = b'calstream_in_flight{stage="stage2"} 2\n'
_READY = b'{"ready": true, "problems": []}'
_DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("path, body, said", [
    ("/metrics", b'calstream_in_flight{stage="detector1"} NaN\n', "stage2: in flight 2"),
    ("/metrics", b"calstream_in_flight 3\n", "stage2: in flight 2"),
    ("/metrics", b'calstream_parked_items{stage="stage2",cause="disk_full"} +Inf\n',
     "stage2: in flight 2"),
    ("/readyz", b'{"ready": false, "problems": [1, {"a": 2}]}',
     "/readyz answered something unexpected"),
    ("/readyz", _DEEP, "/readyz answered something unexpected"),
    ("/planner", _DEEP, "missing exposures: not reported (/planner of http://127.0.0.1:"),
])
def test_status_says_what_a_forged_endpoint_serves_wrong_not_a_traceback(
        path, body, said, tmp_path, capsys):
    """What answers at a --metrics-url is read as untrusted: a NaN or an
    infinite count (Prometheus text allows both), a sample without its
    stage label, problems that are no text, JSON nested too deep each ended
    `calstream status` in a traceback (ValueError, KeyError, OverflowError,
    AttributeError, RecursionError), the rest of the summary unsaid."""
    from calstream.daemon.operations.cli.main import main

    answers = {"/metrics": (200, _METRICS), "/readyz": (200, _READY)}
    answers[path] = (200, _METRICS + body if path == "/metrics" else body)
    with daemon_like(answers) as address:
        code = main(["status", "--work-dir", str(tmp_path), "--metrics-url", address])
    out = capsys.readouterr().out
    assert code == 1  # no broker given: not healthy, said in the summary
    assert said in out and "calstream status at" in out, out


def test_an_endpoint_that_answers_a_byte_now_and_then_is_given_up():
    """The socket's timeout bounds each read only: an answer sent a byte
    every 50 ms (a broken proxy, a tarpit) held `calstream status` until it
    ended, however long that was."""
    with daemon_like({"/metrics": (200, b"#" * 400)}, drip=0.05) as address:
        ep = read_endpoint(address, timeout=1)
    assert not ep.reachable and "did not answer whole in time" in ep.error, ep


def test_an_endpoint_answering_without_end_is_cut_at_a_bound(monkeypatch):
    """An answer is read up to ANSWER_BYTES, not until memory runs out."""
    from calstream.daemon.operations import status_collection

    monkeypatch.setattr(status_collection, "ANSWER_BYTES", 1000, raising=False)
    with daemon_like({"/metrics": (200, _METRICS * 200)}) as address:
        ep = status_collection.read_endpoint(address, timeout=5)
    assert not ep.reachable and "answers more than" in ep.error, ep


def test_a_planner_view_too_large_to_read_is_said_so_not_that_no_planner_runs(
        monkeypatch, tmp_path, capsys):
    """A /planner past what status reads of an answer (ANSWER_BYTES), or not
    whole in time, was taken for a 404: "not reported (no daemon given
    serves /planner)", the operator sent looking for a planner that runs.
    Now status and the console say the view could not be read, and why."""
    from calstream.daemon.operations import console_pages, status_collection
    from calstream.daemon.operations.cli.main import main
    from calstream.daemon.operations.status_summary import summarise_planner

    from .test_console import _snapshot

    monkeypatch.setattr(status_collection, "ANSWER_BYTES", 1000, raising=False)
    view = b'{"caught_up": true, "namespaces": {}, "x": "' + b"y" * 2000 + b'"}'
    answers = {"/metrics": (200, _METRICS), "/readyz": (200, _READY), "/planner": (200, view)}
    with daemon_like(answers) as address:
        main(["status", "--work-dir", str(tmp_path), "--metrics-url", address])
        ep = status_collection.read_endpoint(address, timeout=5)
    out = capsys.readouterr().out
    said = f"/planner of http://{address} unreadable: "
    assert f"  missing exposures: not reported ({said}" in out and "answers more than" in out, out
    assert "no daemon given serves /planner" not in out, out
    status = Status(time.time(), "p.", "p", [ep], {}, BrokerView("h:1"), summarise_planner([ep]))
    html = console_pages.index(_snapshot({}, status)).decode()
    assert "not reported (" + said in html and "no daemon given serves" not in html


def test_a_daemon_without_the_planner_role_is_still_no_planner():
    with daemon_like({"/metrics": (200, _METRICS), "/readyz": (200, _READY)}) as address:
        ep = read_endpoint(address, timeout=5)
    assert ep.planner is None and ep.planner_error is None, ep
