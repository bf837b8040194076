"""The operations endpoint: /metrics, /healthz (alive), /readyz (making progress),
/planner (open associations and missing exposures, as JSON).

Requests are answered from a thread, so /healthz asks ``health``, which judges
a heartbeat the event loop writes: a wedged loop makes it fail although this
thread still answers."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from calstream.daemon.operations.metrics import Metrics

log = logging.getLogger("calstream.http")

Readiness = Callable[[], tuple[bool, list[str]]]


class OpsServer:
    def __init__(self, host: str, port: int, metrics: Metrics, readiness: Readiness,
                 planner: Callable[[], dict | None] | None = None,
                 pages: Callable[[str], tuple[int, bytes, str] | None] | None = None,
                 health: Readiness | None = None):
        metrics_ref, ready_ref = metrics, readiness
        health_ref = health or (lambda: (True, []))
        planner_ref = planner or (lambda: None)
        # Other read-only pages (the console at /console): (code, body, type) or None.
        pages_ref = pages or (lambda path: None)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(metrics_ref.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok, problems = health_ref()
                    body = b"ok\n" if ok else ("\n".join(problems) + "\n").encode()
                    self._send(200 if ok else 503, body, "text/plain")
                elif path == "/readyz":
                    ok, problems = ready_ref()
                    body = json.dumps({"ready": ok, "problems": problems}).encode() + b"\n"
                    self._send(200 if ok else 503, body, "application/json")
                elif path == "/planner":
                    # What each open association waits for, and which exposures are
                    # missing: lists a metric cannot carry (calstream status reads it).
                    view = planner_ref()
                    if view is None:
                        self._send(404, b"this daemon runs no planner\n", "text/plain")
                    else:
                        self._send(200, json.dumps(view, default=str).encode() + b"\n",
                                   "application/json")
                elif (page := pages_ref(self.path)) is not None:
                    self._send(*page)
                else:
                    self._send(404, b"not found: try /metrics, /healthz, /readyz, /planner, "
                               b"/console/\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes every 15 s are not news
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="ops-http",
                                       daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> str:
        self.thread.start()
        return self.address

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
