"""How a worker process is started: forked from a warm server process.

multiprocessing's forkserver starts one server process (worker_server.py:
it imports jwst and warms up once) the first time a pool starts a worker;
each worker after that is a fork of it. A process has one server, shared by
all its pools. Forked, not spawned: a spawned worker imported jwst itself
(about 6 CPU seconds) at every pool start and every replacement; the
server's fork costs a tenth of a second (bench/worker_start.py). Never a fork
of the daemon itself: it has threads (the event loop's, the broker
clients'), and a fork copies their locks in whatever state they are.

What a spawned worker got from the daemon at its start and a fork would get
from the server's start instead is handed over at each start: the daemon's
environment and stdio as they are now (worker_lifecycle._new_worker;
worker_process.worker_main applies them). Every start, the server's among
them, runs off the event loop in one long-lived thread, with the server
watched meanwhile: worker_server_watch.py.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from multiprocessing.context import BaseContext

# The server's preload. Never imported by the daemon or a spawned process:
# importing it is what makes a process the server.
SERVER_MODULE = "calstream.daemon.doers.worker_server"
# The pid of the process that starts the server, which the server dies with.
PARENT_ENV = "CALSTREAM_WORKER_SERVER_PARENT"


def worker_context() -> BaseContext:
    """The context a pool starts its workers with."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([SERVER_MODULE])
    # The server dies with the process that started it (worker_server): the
    # pid it checks its parent against. Set on every call: cheap, and right
    # in a process forked from one that set it.
    os.environ[PARENT_ENV] = str(os.getpid())
    return ctx


def server_pid() -> int | None:
    """In a worker forked from the server: the server's pid (its parent's)."""
    import sys

    server = sys.modules.get(SERVER_MODULE)
    return getattr(server, "SERVER_PID", None)
