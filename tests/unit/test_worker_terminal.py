"""A worker leads a process group of its own (child_processes.lead_own_group),
so under a foreground ``calstream run`` in a terminal it is in a background
group of that terminal. Its warnings go to the daemon's stderr, the terminal:
with ``stty tostop`` the kernel stopped it (SIGTTOU) at its first warning
line, and the pool killed it as stopped (worker_stopped.py) and ran the item
again, to be stopped again: every run that warned was lost. Now a worker
ignores SIGTTOU (and SIGTTIN): its lines are written, its run ends.

A real daemon-like process made the session leader and foreground group of a
real pseudo-terminal (tostop set), with a real worker pool."""

import os
import select
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The "daemon": owns the terminal (foreground), sets tostop, runs one task
# that logs a warning (the worker's stderr: the terminal) and says how it ended.
DAEMON = r"""
import fcntl, sys, termios
import anyio
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
attrs = termios.tcgetattr(0)
attrs[3] |= termios.TOSTOP
termios.tcsetattr(0, termios.TCSANOW, attrs)
from calstream.daemon.doers.worker_pool import WorkerPool, WorkerStopped
from calstream.daemon.operations.metrics import Metrics

async def main():
    pool = WorkerPool(1, stage="detector1", metrics=Metrics(), stopped_seconds=2)
    pool.start()
    try:
        outcome = await pool.run("tests.unit.test_worker_terminal:warns", {}, timeout=60)
        print("ENDED", outcome.value, flush=True)
    except WorkerStopped as exc:
        print("STOPPED", exc, flush=True)
    finally:
        pool.close()

anyio.run(main)
"""


def warns() -> str:
    """A run's warning: a line on the worker's stderr, as the pipelines' are."""
    import logging

    logging.getLogger("calstream.test").warning("a warning line from the run")
    return "done"


def test_a_worker_writes_to_the_foreground_terminal_without_being_stopped():
    main, terminal = os.openpty()
    try:
        daemon = subprocess.Popen(
            [sys.executable, "-c", DAEMON], stdin=terminal, stdout=terminal, stderr=terminal,
            cwd=REPO, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "CRDS_PATH": "/nonexistent"})
    finally:
        os.close(terminal)
    said = b""
    deadline = time.monotonic() + 120  # a bound for a loaded machine, not a measure
    try:
        while daemon.poll() is None and time.monotonic() < deadline:
            if select.select([main], [], [], 0.2)[0]:
                try:
                    said += os.read(main, 65536)
                except OSError:  # EIO: the terminal's last holder closed it
                    break
        daemon.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        os.close(main)
    text = said.decode(errors="replace")
    assert "a warning line from the run" in text, text
    assert "ENDED done" in text, text
