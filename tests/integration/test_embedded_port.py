"""The embedded broker's port is held from the moment the daemon records it.

The daemon chooses the port when it is made and launches tansu only after
CRDS and its work directory are there, which may be hours later; a port
merely chosen could be taken meanwhile (by a server binding it, or by an
outgoing connection), and the start would end with tansu unable to listen.
"""

from __future__ import annotations

import socket

import pytest

from calstream.daemon.doers.embedded_broker import EmbeddedBroker

pytestmark = [pytest.mark.integration]


def _bind(port: int) -> None:
    # As an HTTP server does (socketserver's allow_reuse_address).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))


def test_the_reserved_port_is_nobody_elses_until_tansu_listens_on_it(tmp_path):
    broker = EmbeddedBroker(tmp_path)
    port = broker.reserve_port()
    assert broker.bootstrap == f"127.0.0.1:{port}"
    with pytest.raises(OSError, match="in use"):
        _bind(port)
    try:
        assert broker.start() == f"127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), 2):
            pass  # tansu listens where the address said
    finally:
        broker.stop()


def test_a_daemon_stopped_before_its_broker_started_releases_the_port(tmp_path):
    broker = EmbeddedBroker(tmp_path)
    port = broker.reserve_port()
    broker.stop()
    _bind(port)  # free again
