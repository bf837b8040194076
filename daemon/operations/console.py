"""The read-only web console: under /console on the daemon's operations
endpoint (same address, loopback by default), or on its own with
``calstream console --work-dir W`` next to a running deployment.

GET only; nothing is written. Previews are served from the product store's
``previews/`` directories and from nowhere else.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from calstream.daemon.doers.product_store import LIVE, BadNamespace, check_namespace
from calstream.daemon.operations import console_pages
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.console_data import ConsoleData
from calstream.daemon.operations.ops_http import OpsHTTPServer, OpsRequestHandler
from calstream.steps.failures import error_text

log = logging.getLogger("calstream.console")

Response = tuple[int, bytes, str]
HTML = "text/html; charset=utf-8"


class Console:
    def __init__(self, cfg: Config, metrics_urls: Callable[[], list[str]], *, ttl: float = 5.0):
        self.data = ConsoleData(cfg, metrics_urls, ttl=ttl)
        self.products = Path(cfg.products).resolve()

    def handle(self, raw_path: str) -> Response | None:
        """The response to a GET of ``raw_path``; None when it is not the console's."""
        try:
            return self._handle(raw_path)
        except Exception as exc:  # noqa: BLE001 - one page, not the endpoint: said, not dropped
            # What a page shows is anyone's (records, files, what daemons
            # serve): a shape no page expected answered no bytes at all.
            log.warning("console: %s could not be shown: %s", raw_path[:200], error_text(exc))
            return 500, (f"the console could not build this page: {error_text(exc, 300)}; "
                         "the daemon's log has the line\n").encode("utf-8", "backslashreplace"), \
                "text/plain; charset=utf-8"

    def _handle(self, raw_path: str) -> Response | None:
        path, _, query_text = raw_path.partition("?")
        if path != console_pages.ROOT and not path.startswith(console_pages.ROOT + "/"):
            return None
        query = urllib.parse.parse_qs(query_text)
        rest = path[len(console_pages.ROOT):].strip("/")
        if rest == "preview":
            return self._preview(query.get("path", [""])[0])
        try:
            namespace = check_namespace(query.get("ns", [LIVE])[0])
        except BadNamespace as exc:
            return 400, f"{exc}\n".encode(), "text/plain"
        if namespace != LIVE and namespace not in self.data.store.namespaces():
            # Before any snapshot: each name asked for was one kept for good
            # (?ns=a1, a2, ...: the daemon's memory grew with every request).
            return 404, (f"no namespace {namespace!r} in {self.products}; try /console/, "
                         "which lists them\n").encode(), "text/plain"
        snap = self.data.snapshot(namespace)
        if rest == "":
            return 200, console_pages.index(snap, query), HTML
        parts = rest.split("/")
        if len(parts) == 3 and parts[0] == "program":
            obs = snap.observation(parts[1], parts[2])
            if obs is None:
                return 404, console_pages.no_observation(snap, parts[1], parts[2]), HTML
            return 200, console_pages.observation_page(snap, obs, query), HTML
        return 404, b"not found: try /console/\n", "text/plain"

    def _preview(self, wanted: str) -> Response:
        """A preview PNG, only from a previews/ directory inside the product store."""
        wanted = self.data.store.moved(wanted)  # events from before a move name the old root
        try:
            path = Path(wanted).resolve()
        # ValueError: a NUL; RuntimeError: a loop of links (anyone can make
        # one in /tmp, and it raised out of the request: no answer at all).
        except (OSError, ValueError, RuntimeError):
            return 400, b"bad path\n", "text/plain"
        if (path.suffix != ".png" or path.parent.name != "previews"
                or not path.is_relative_to(self.products) or not path.is_file()):
            return 404, b"no such preview\n", "text/plain"
        return 200, path.read_bytes(), "image/png"


def serve(console: Console, host: str, port: int) -> OpsHTTPServer:
    class Handler(OpsRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path in ("/", ""):
                self.send_answer(302, b"", "text/plain",
                                 headers=(("Location", console_pages.ROOT + "/"),))
                return
            answer = console.handle(self.path)
            self.send_answer(*(answer or (404, b"not found: try /console/\n", "text/plain")))

    return OpsHTTPServer((host, port), Handler)
