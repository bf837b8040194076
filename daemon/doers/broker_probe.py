"""Does the broker answer? One Kafka request of the probe's own.

A TCP connection is not an answer: a broker that is wedged (a process
stopped or deadlocked, a disk it blocks on, a long pause) still has its
kernel accept connections, and then never answers a request. Every client
of the daemon then times out and parks its work, while a probe that only
connects saw a broker that was up: /readyz said ready, ``calstream_broker_up``
1, and a wedged embedded broker was never started again. So the probe
sends ApiVersions (the first request every Kafka client sends, answered
before any authentication) and waits for the answer that names its
request, up to the time a client would wait (``broker_timeout_seconds``).

A wedged embedded broker is killed (``kill_if_wedged``) and waited for
EXIT_SECONDS at most: SIGKILL ends a process at once unless the kernel
holds it (uninterruptible sleep, state D: a call on a mount whose server
is away). That wait was untimed, in a thread nobody could abandon: such a
tansu held the supervisor (no restart, no "lost" line, ``calstream_broker_up``
still 1) and a stop of the daemon for as long as the kernel held it. Now
it raises ``BrokerUndead``, and the caller calls the broker lost.
"""

from __future__ import annotations

import random
import socket
import ssl
import struct
import subprocess
import time
from functools import partial

import anyio

from calstream.daemon.doers.embedded_broker import BrokerError, EmbeddedBroker

API_VERSIONS = 18  # its version 0 has an empty body, which every broker answers
CLIENT_ID = b"calstream-probe"
MAX_ANSWER = 1 << 20  # bytes: an ApiVersions answer is a few hundred
# A killed broker's exit waited for at most this (EmbeddedBroker.stop's):
# only a process the kernel holds outlives SIGKILL longer.
EXIT_SECONDS = 5.0


class BrokerUndead(BrokerError):
    """The broker's process, killed, has not exited ``seconds`` later: the
    kernel holds it (uninterruptible sleep). It keeps its port, so none can
    be started in its place until it exits."""

    def __init__(self, pid: int, seconds: float) -> None:
        self.pid, self.seconds = pid, seconds
        super().__init__(f"the embedded broker (pid {pid}) did not answer and did not exit "
                         f"within {seconds:g}s of SIGKILL (held in the kernel: a call on "
                         "storage that does not answer?): its port stays taken until it exits")


def _request(correlation: int) -> bytes:
    header = struct.pack(">hhih", API_VERSIONS, 0, correlation, len(CLIENT_ID)) + CLIENT_ID
    return struct.pack(">i", len(header)) + header


def _read(conn: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer")
        conn.settimeout(left)
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed before it answered")
        data += chunk
    return data


def _answers_at(host: str, port: int, connect_timeout: float, answer_timeout: float,
                ssl_context: ssl.SSLContext | None) -> bool:
    with socket.create_connection((host, port), connect_timeout) as raw:
        deadline = time.monotonic() + answer_timeout  # a TLS handshake is an answer too
        raw.settimeout(answer_timeout)
        conn = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
        correlation = random.randrange(1, 2**31)
        conn.sendall(_request(correlation))
        size, answered = struct.unpack(">ii", _read(conn, 8, deadline))
        return answered == correlation and 4 <= size <= MAX_ANSWER


def answers(bootstrap: str, *, connect_timeout: float, answer_timeout: float,
            ssl_context: ssl.SSLContext | None = None) -> bool:
    """Whether any bootstrap address answers a Kafka request in time."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            if _answers_at(host.strip("[]"), int(port), connect_timeout, answer_timeout,
                           ssl_context):
                return True
        except (OSError, ValueError, struct.error):  # ssl.SSLError and timeouts are OSErrors
            continue
    return False


# Its own thread token: a probe must not queue behind the daemon's other threads.
_PROBE_LIMITER: anyio.CapacityLimiter | None = None


async def answering(bootstrap: str, *, answer_timeout: float, connect_timeout: float = 2.0,
                    ssl_context: ssl.SSLContext | None = None) -> bool:
    """``answers`` in a thread of the probe's own, abandoned if cancelled."""
    global _PROBE_LIMITER
    _PROBE_LIMITER = _PROBE_LIMITER or anyio.CapacityLimiter(1)

    def probe() -> bool:
        return answers(bootstrap, connect_timeout=connect_timeout,
                       answer_timeout=answer_timeout, ssl_context=ssl_context)
    return await anyio.to_thread.run_sync(probe, limiter=_PROBE_LIMITER,
                                          abandon_on_cancel=True)


async def kill_if_wedged(broker: EmbeddedBroker, answer_timeout: float) -> int | None:
    """The pid of ``broker``'s process if it was running, did not answer
    within ``answer_timeout`` and is now killed, so that whoever keeps it
    starts it again as after a crash; None if it answered, is not running, or
    was started again while it was asked. BrokerUndead if it has not exited
    EXIT_SECONDS after SIGKILL (the wait is abandoned by a cancel: a
    stop is never held by it)."""
    proc = broker.process
    if proc is None or proc.poll() is not None:
        return None
    if await answering(broker.bootstrap, answer_timeout=answer_timeout):
        return None
    if broker.process is not proc or proc.poll() is not None:
        return None
    proc.kill()
    seconds = EXIT_SECONDS
    if not await anyio.to_thread.run_sync(partial(_exits, proc, seconds),
                                          abandon_on_cancel=True):
        raise BrokerUndead(proc.pid, seconds)
    return proc.pid


def _exits(proc: subprocess.Popen, seconds: float) -> bool:
    """Whether ``proc`` exits (and is reaped) within ``seconds``."""
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return False
    return True
