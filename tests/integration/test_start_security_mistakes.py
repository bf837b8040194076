"""TLS and SASL mistakes stop the start at once; a broker not there is waited for.

aiokafka reports a certificate that does not verify, or credentials the
broker refuses, as it reports a broker that does not answer ("Unable to
bootstrap"), so the daemon waited for them for ever (docs/operations.md,
"Starting into a broken world"). Each mistake here is met on a real
socket: a TLS server (Python's ssl) presenting a certificate the configured
CA did not sign, CA and client certificate files that are no certificates,
and tansu requiring SASL authentication from a user it does not know. Each
must end `calstream run` with exit status 2 and one line naming the
setting; with the same TLS settings and nobody listening, it still waits.
Certificates are made at run time with the openssl command.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from calstream.daemon.doers.embedded_broker import free_port, tansu_binary

from .support import refused_address
from .test_start_heal import calstream, until_it_waits_for_its_broker

pytestmark = [pytest.mark.integration]

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None and os.environ.get("CI") != "true",
                                   reason="the openssl command makes the test certificates")


def _certificate(where: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = where / f"{name}.crt", where / f"{name}.key"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class TlsServer:
    """A TLS listener presenting ``cert``: each client's handshake, then close."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.handshakes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.handshakes += 1
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass  # the client refused our certificate: what the test wants
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


def _run(tmp_path: Path, bootstrap: str, **security: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({f"CALSTREAM_SECURITY_{k.upper()}": v for k, v in security.items()})
    return calstream("run", "--work-dir", str(tmp_path / "work"), "--kafka-bootstrap",
                     bootstrap, "--metrics-address", "127.0.0.1:0", "--role", "watcher",
                     env=env)


def _configuration_error(daemon: subprocess.Popen, *named: str) -> str:
    """The daemon's one line, once it ended with status 2. The bound is for a
    daemon that waits for ever (the defect), not a measure."""
    try:
        _, err = daemon.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        daemon.kill()
        _, err = daemon.communicate()
        pytest.fail(f"still running after 120 s: it waits for a mistake\n{err[-3000:]}")
    assert daemon.returncode == 2, (daemon.returncode, err[-3000:])
    ours = [line for line in err.splitlines() if line.startswith("calstream: configuration")]
    assert len(ours) == 1, err[-3000:]
    assert all(n in ours[0] for n in named), ours[0]
    assert "Traceback" not in err, err[-3000:]
    return ours[0]


@needs_openssl
def test_a_broker_certificate_the_ca_did_not_sign(tmp_path):
    server = TlsServer(*_certificate(tmp_path, "broker"))
    ca, _ = _certificate(tmp_path, "another-ca")
    try:
        line = _configuration_error(_run(tmp_path, server.address, protocol="SSL",
                                         ssl_cafile=str(ca)), "security.ssl_cafile",
                                    "does not verify")
    finally:
        server.close()
    assert server.handshakes >= 1 and str(ca) in line


@needs_openssl
@pytest.mark.parametrize("ca_file", ["garbage", "missing", "a directory", "a FIFO",
                                     "/dev/zero"])
def test_a_ca_file_that_is_no_certificate(tmp_path, ca_file):
    """A FIFO (waited for a writer for ever) and /dev/zero (read without an
    end) too: each is one line naming the setting, at once."""
    server = TlsServer(*_certificate(tmp_path, "broker"))
    ca = tmp_path / "ca.pem"
    if ca_file == "garbage":
        ca.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    elif ca_file == "a directory":
        ca.mkdir()
    elif ca_file == "a FIFO":
        os.mkfifo(ca)
    elif ca_file == "/dev/zero":
        ca.symlink_to("/dev/zero")
    try:
        line = _configuration_error(_run(tmp_path, server.address, protocol="SSL",
                                         ssl_cafile=str(ca)), "security.ssl_cafile")
    finally:
        server.close()
    assert str(ca) in line


@needs_openssl
def test_a_client_certificate_and_a_key_that_do_not_match(tmp_path):
    server = TlsServer(*_certificate(tmp_path, "broker"))
    cert, _ = _certificate(tmp_path, "client")
    _, other_key = _certificate(tmp_path, "other")
    try:
        _configuration_error(_run(tmp_path, server.address, protocol="SSL",
                                  ssl_cafile=str(tmp_path / "broker.crt"), ssl_certfile=str(cert),
                                  ssl_keyfile=str(other_key)), "security.ssl_certfile")
    finally:
        server.close()


def _sasl_broker() -> tuple[subprocess.Popen, int]:
    """tansu requiring SCRAM authentication, listening. Its port is chosen
    free and bound by tansu itself, so another process may take it between:
    tansu then exits, and is started again on another port. Without this
    the daemon below would meet nobody, wait for its broker, and the test
    would end at its bound instead of naming the collision."""
    for _ in range(3):
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        broker = subprocess.Popen([str(tansu_binary()), "broker", "--listener-url", url,
                                   "--advertised-listener-url", url, "--storage-engine",
                                   "memory://tansu/", "--authentication"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # a loaded machine; tansu starts in milliseconds
        while broker.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return broker, port
            except OSError:
                time.sleep(0.1)
        broker.kill()
        broker.wait()
    pytest.fail("tansu with --authentication did not listen in three tries")


def test_sasl_credentials_the_broker_refuses(tmp_path):
    """tansu requiring authentication (SCRAM), and a user it does not know."""
    broker, port = _sasl_broker()
    try:
        _configuration_error(
            _run(tmp_path, f"127.0.0.1:{port}", protocol="SASL_PLAINTEXT",
                 sasl_mechanism="SCRAM-SHA-256", sasl_username="nobody",
                 sasl_password="wrong"), "security.sasl_", "refuses the SASL authentication")
    finally:
        broker.terminate()
        broker.wait(timeout=30)


@needs_openssl
def test_with_tls_settings_a_broker_not_listening_is_waited_for(tmp_path):
    ca, _ = _certificate(tmp_path, "ca")
    work = tmp_path / "work"
    with refused_address(tmp_path) as nobody:
        daemon = _run(tmp_path, nobody, protocol="SSL", ssl_cafile=str(ca))
        try:
            until_it_waits_for_its_broker(daemon, work)
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=60)
        finally:
            if daemon.poll() is None:
                daemon.kill()
    assert daemon.returncode == 0, err[-3000:]
