"""The operations endpoint: /metrics, /healthz (alive), /readyz (making progress),
/planner (open associations and missing exposures, as JSON).

Requests are answered from a thread, so /healthz asks ``health``, which judges
a heartbeat the event loop writes: a wedged loop makes it fail although this
thread still answers."""

from __future__ import annotations

import http.client
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from calstream.daemon.operations.metrics import Metrics
from calstream.steps.failures import error_text

log = logging.getLogger("calstream.http")

Readiness = Callable[[], tuple[bool, list[str]]]

# A request (its line and headers) must have come whole this many seconds
# after its connection opened, and each write of the answer is bounded so:
# a client that never finished its request (or sent a byte now and then)
# held a thread and a file descriptor for ever, and enough of them took
# the descriptors the daemon needs for the broker and the store.
REQUEST_SECONDS = 10.0
# Connections answered at once; one more is closed as it comes, with a
# warning. A flood of connections (each let go after REQUEST_SECONDS) took
# one descriptor each, until the daemon had none left for the broker, its
# files and its workers (EMFILE), and the accept loop spun on the error.
MAX_CONNECTIONS = 256
# Other pages (the console) answered at once; one more is answered 503 at
# once. A console page may wait for its snapshot's rebuild (the broker, the
# store: up to ~15 s), and a few hundred asked for at once held every
# connection slot meanwhile: a scrape or a liveness probe then had its
# connection closed unanswered, and a probe's failures restart the daemon.
MAX_PAGES = 8


# What a request's line and headers may be in all. http.server bounds each
# line (64 KiB) and the count of headers (100), not their sum: a request of
# 100 headers of 64 KiB each was read whole, 6.5 MB held per connection,
# over a GB for MAX_CONNECTIONS of them. A scrape's is a few hundred bytes.
REQUEST_BYTES = 128 << 10


class RequestTooLarge(http.client.LineTooLong):
    """A request past REQUEST_BYTES: answered 431, as a header line too long."""


class _ByDeadline:
    """The request's reader, its lines read by ``deadline`` (monotonic): the
    socket's timeout alone bounds each read, not a line sent a byte a time;
    and at most REQUEST_BYTES of them."""

    def __init__(self, reader, connection, deadline: float):
        self.reader, self.connection, self.deadline = reader, connection, deadline
        self.left = REQUEST_BYTES

    def readline(self, limit: int = -1) -> bytes:
        if self.left <= 0:
            raise RequestTooLarge(f"headers past {REQUEST_BYTES} bytes in all")
        limit = self.left if limit < 0 else min(limit, self.left)
        line = self._readline(limit)
        self.left -= len(line)
        return line

    def _readline(self, limit: int) -> bytes:
        line = bytearray()
        while len(line) < limit:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not come whole in time")
            self.connection.settimeout(left)
            buffered = self.reader.peek(1)  # what is buffered, or one read's worth
            if not buffered:
                break
            want = min(len(buffered), limit - len(line))
            end = buffered.find(b"\n", 0, want)
            line += self.reader.read(end + 1 if end >= 0 else want)
            if end >= 0:
                break
        return bytes(line)

    def __getattr__(self, name: str):
        return getattr(self.reader, name)


class OpsRequestHandler(BaseHTTPRequestHandler):
    """GET only, each request bounded in time (REQUEST_SECONDS); quiet."""

    timeout = REQUEST_SECONDS

    def setup(self) -> None:
        super().setup()
        self.rfile = _ByDeadline(self.rfile, self.connection, time.monotonic() + self.timeout)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.connection.settimeout(self.timeout)  # the answer's writes: bounded on their own
        return ok

    def send_answer(self, code: int, body: bytes, ctype: str, *,
                    headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # scrapes every 15 s are not news
        pass


class OpsHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once, none
    waited for at a stop; an error of one request is a line of the log, not
    a traceback on stderr."""

    daemon_threads = True
    # The listen backlog (socketserver's is 5): a burst of connections beyond
    # it had their SYNs dropped, and a scrape among them waited 1 to 3 s for
    # its retransmissions.
    request_queue_size = 128

    def __init__(self, address, handler, *, max_connections: int = MAX_CONNECTIONS):
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            log.warning("operations endpoint: %d connections are being answered: one more "
                        "from %s closed unanswered", self.max_connections,
                        client_address[0] if client_address else "?")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread to give the slot back
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        # A client gone before its answer (a scrape's own time-out) is no news.
        level = logging.DEBUG if isinstance(exc, OSError) else logging.WARNING
        log.log(level, "operations endpoint: a request from %s failed: %s",
                client_address[0] if client_address else "?",
                error_text(exc) if exc else "unknown")


class OpsServer:
    def __init__(self, host: str, port: int, metrics: Metrics, readiness: Readiness,
                 planner: Callable[[], dict | None] | None = None,
                 pages: Callable[[str], tuple[int, bytes, str] | None] | None = None,
                 health: Readiness | None = None, request_seconds: float = REQUEST_SECONDS,
                 max_connections: int = MAX_CONNECTIONS, max_pages: int = MAX_PAGES):
        metrics_ref, ready_ref = metrics, readiness
        health_ref = health or (lambda: (True, []))
        planner_ref = planner or (lambda: None)
        # Other read-only pages (the console at /console): (code, body, type) or None.
        pages_ref = pages or (lambda path: None)
        page_slots = threading.BoundedSemaphore(max_pages)

        def page_or_busy(path: str) -> tuple[int, bytes, str] | None:
            if not page_slots.acquire(blocking=False):
                return 503, (f"{max_pages} pages are being built: try again in a few "
                             "seconds\n").encode(), "text/plain"
            try:
                return pages_ref(path)
            finally:
                page_slots.release()

        class Handler(OpsRequestHandler):
            timeout = request_seconds

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self.send_answer(200, generate_latest(metrics_ref.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok, problems = health_ref()
                    body = b"ok\n" if ok else ("\n".join(problems) + "\n").encode()
                    self.send_answer(200 if ok else 503, body, "text/plain")
                elif path == "/readyz":
                    ok, problems = ready_ref()
                    body = json.dumps({"ready": ok, "problems": problems}).encode() + b"\n"
                    self.send_answer(200 if ok else 503, body, "application/json")
                elif path == "/planner":
                    # What each open association waits for, and which exposures are
                    # missing: lists a metric cannot carry (calstream status reads it).
                    view = planner_ref()
                    if view is None:
                        self.send_answer(404, b"this daemon runs no planner\n", "text/plain")
                    else:
                        self.send_answer(200, json.dumps(view, default=str).encode() + b"\n",
                                   "application/json")
                elif (page := page_or_busy(self.path)) is not None:
                    self.send_answer(*page)
                else:
                    self.send_answer(404, b"not found: try /metrics, /healthz, /readyz, /planner, "
                               b"/console/\n", "text/plain")

        self.server = OpsHTTPServer((host, port), Handler, max_connections=max_connections)
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
