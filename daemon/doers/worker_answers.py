"""Reading a worker's answer, watched as its run is.

The pool polls a run's pipe every 0.2 s and between two polls checks its
time-out, its memory and whether it is stopped (worker_pool._exchange). Once
the pipe has something, ``Connection.recv`` reads the whole answer and
blocks until it has: an answer larger than one write (16 KiB and more: a
stage-3 run's outputs and their digests) comes in parts, and a worker stopped
(SIGSTOP, a frozen cgroup) or hung between two parts held that read, the
run, its exposure and its worker's turn for ever -- its time-out was never
looked at again. ``received`` reads with a watcher beside it asking the
same checks every 0.2 s; the check that ends the run kills the worker and
ends the read (``_end_read``): raised as what the check found. Not by the
kill alone: a worker that outlives its SIGKILL for a while -- in a cgroup v1
freezer's frozen cgroup (it dies when thawed), in uninterruptible sleep on
a hard NFS mount (when its I/O returns) -- keeps its end of the pipe open,
and the read, its run and its worker's turn waited with it (session 44).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

WATCH_SECONDS = 0.2  # as the pool's polls


def received(conn: Connection, watch: Callable[[], BaseException | None]) -> Any:
    """``conn.recv()``, ``watch()`` asked every WATCH_SECONDS meanwhile (in a
    thread): an error it returns (having killed the worker) is raised in
    place of the read's EOFError or OSError. A read that ends well returns
    its answer, whatever the watcher found meanwhile: the worker may have
    been killed as the answer came whole, and the caller's ``watch`` keeps
    what it found (the pool on the worker, ``Worker.lost``: it replaces that
    worker, never hands it another run)."""
    done, found = threading.Event(), []

    def watching() -> None:
        while not done.wait(WATCH_SECONDS):
            if (why := watch()) is not None:
                found.append(why)
                _end_read(conn)
                return

    watcher = threading.Thread(target=watching, name="answer-watch", daemon=True)
    watcher.start()
    try:
        return conn.recv()
    except (EOFError, OSError):
        done.set()
        watcher.join()
        if found:
            raise found[0] from None
        raise
    finally:
        done.set()
        watcher.join()


def _end_read(conn: Connection) -> None:
    """End a ``recv`` blocked on ``conn`` in another thread: the pool's pipes
    are socket pairs (``Pipe()``, duplex), and a shutdown of the socket
    makes the read find its end (EOFError) whoever still holds the other
    end. Done through a duplicate of the descriptor: the connection keeps
    its own, closed with the worker (worker_lifecycle._end)."""
    try:
        fd = os.dup(conn.fileno())  # OSError: closed meanwhile (the worker ended)
    except (OSError, ValueError):
        return
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # not a socket (a one-way pipe): the kill alone ends the read
        os.close(fd)
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
