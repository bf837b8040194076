"""The operations endpoint against clients that never finish their request
(real sockets on loopback): each is let go, and scrapes are answered meanwhile."""

from __future__ import annotations

import socket
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
