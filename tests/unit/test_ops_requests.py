"""The operations endpoint against clients that never finish their request
(real sockets on loopback): each is let go, and scrapes are answered meanwhile."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

from calstream.daemon.operations.metrics import Metrics
from calstream.daemon.operations.ops_http import OpsServer


def _let_go(conn: socket.socket, *, drip: bool, tries: int = 200) -> bool:
    """Whether the server closes ``conn`` within ``tries`` tenths of a second,
    a byte of the request sent at each if ``drip``."""
    conn.settimeout(0.1)
    for _ in range(tries):
        try:
            if drip:
                conn.sendall(b"x")
            if conn.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:  # reset: closed with our bytes unread
            return True
    return False


@pytest.mark.parametrize("drip", [False, True], ids=["silent", "a byte now and then"])
def test_a_client_that_never_finishes_its_request_is_let_go(drip):
    """A client that opened a connection and never finished its request line
    (or sent it a byte at a time) held a handler thread and a descriptor for
    ever (no timeout): enough of them took the descriptors the daemon needs
    for the broker and the store. Each request now has REQUEST_SECONDS to
    come whole (0.5 here), and /metrics is answered meanwhile."""
    ops = OpsServer("127.0.0.1", 0, Metrics(), lambda: (True, []), request_seconds=0.5)
    ops.start()
    host, port = ops.server.server_address[:2]
    held = [socket.create_connection((host, port)) for _ in range(20)]
    try:
        for conn in held:
            conn.sendall(b"GET /metr")
        with urllib.request.urlopen(f"http://{ops.address}/metrics", timeout=10) as r:
            assert r.status == 200 and b"calstream_" in r.read()
        assert _let_go(held[0], drip=drip)
    finally:
        for conn in held:
            conn.close()
        ops.stop()


def test_connections_past_the_bound_are_closed_not_held_and_the_slots_come_back():
    """A flood of connections took a descriptor each (let go only after
    REQUEST_SECONDS): enough of them left the daemon none for the broker and
    its files. Past max_connections (4 here) one is closed as it comes; once
    those answered go, the endpoint answers again."""
    ops = OpsServer("127.0.0.1", 0, Metrics(), lambda: (True, []), request_seconds=30,
                    max_connections=4)
    ops.start()
    host, port = ops.server.server_address[:2]
    held = [socket.create_connection((host, port)) for _ in range(4)]
    try:
        for conn in held:
            conn.sendall(b"GET /metr")
        extra = socket.create_connection((host, port))
        assert _let_go(extra, drip=False)  # closed at once, not held 30 s
        extra.close()
        for conn in held:
            conn.close()
        for _ in range(100):  # the handlers see their clients gone, and give their slots back
            try:
                with urllib.request.urlopen(f"http://{ops.address}/healthz", timeout=10) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("the endpoint never answered again")
    finally:
        for conn in held:
            conn.close()
        ops.stop()


def test_a_burst_of_connections_waits_in_the_listen_queue():
    """The listen backlog was socketserver's 5: past it the kernel dropped a
    burst's connections (SYN), and a scrape or a probe among them waited for
    its retransmission, 1 s and then 3 s (a Kubernetes probe's own time-out
    is 1 s). Here nothing accepts (the server not started): 50 connections
    are queued, none refused or left waiting."""
    ops = OpsServer("127.0.0.1", 0, Metrics(), lambda: (True, []))
    host, port = ops.server.server_address[:2]
    queued = []
    try:
        for _ in range(50):
            queued.append(socket.create_connection((host, port), timeout=2))
    finally:
        for conn in queued:
            conn.close()
        ops.server.server_close()
    assert len(queued) == 50


def test_a_request_of_megabytes_of_headers_is_refused_not_read_whole():
    """http.server bounds each header line (64 KiB) and their count (100),
    not their sum: 90 headers of 60 KB each (5.4 MB, held while read, per
    connection of up to 256) were read whole and answered. Past
    REQUEST_BYTES in all, a request is answered 431 (or its connection
    closed under what it still sends), and the endpoint answers on."""
    ops = OpsServer("127.0.0.1", 0, Metrics(), lambda: (True, []))
    ops.start()
    host, port = ops.server.server_address[:2]
    try:
        conn = socket.create_connection((host, port))
        conn.settimeout(10)
        answer = b""
        try:
            conn.sendall(b"GET /healthz HTTP/1.0\r\n")
            for n in range(90):
                conn.sendall(b"X-%d: " % n + b"a" * 60_000 + b"\r\n")
            conn.sendall(b"\r\n")
            while chunk := conn.recv(4096):
                answer += chunk
        except OSError:  # reset: closed with our bytes unread
            pass
        finally:
            conn.close()
        assert not answer.startswith(b"HTTP/1.0 200"), answer[:200]
        assert answer == b"" or answer.startswith(b"HTTP/1.0 431"), answer[:200]
        with urllib.request.urlopen(f"http://{ops.address}/healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        ops.stop()


def test_console_pages_waiting_for_their_snapshot_leave_room_for_scrapes_and_probes():
    """A console page may wait for its snapshot's rebuild (broker, store: up
    to ~15 s). As many page requests as there are connection slots held them
    all meanwhile, and a scrape or a liveness probe had its connection closed
    unanswered (its failures restart the daemon). Past MAX_PAGES at once a
    page is answered 503 at once; /healthz is answered meanwhile."""
    import threading

    from calstream.daemon.operations.ops_http import MAX_PAGES

    release, entered = threading.Event(), []

    def page(path: str):
        entered.append(path)
        release.wait(30)  # a rebuild under way
        return 200, b"a page\n", "text/plain"

    slots = MAX_PAGES + 4
    ops = OpsServer("127.0.0.1", 0, Metrics(), lambda: (True, []), pages=page,
                    max_connections=slots)
    ops.start()
    host, port = ops.server.server_address[:2]
    conns = [socket.create_connection((host, port)) for _ in range(slots)]
    try:
        for conn in conns:
            conn.sendall(b"GET /console/ HTTP/1.0\r\n\r\n")
            conn.settimeout(0.1)
        busy: set[int] = set()
        for _ in range(200):
            for n, conn in enumerate(conns):
                try:
                    if n not in busy and conn.recv(4096).startswith(b"HTTP/1.0 503"):
                        busy.add(n)
                except TimeoutError:
                    pass
            if len(busy) == slots - MAX_PAGES:
                break
        assert len(busy) == slots - MAX_PAGES and len(entered) == MAX_PAGES
        with urllib.request.urlopen(f"http://{ops.address}/healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        release.set()
        for conn in conns:
            conn.close()
        ops.stop()
