"""The worker server: the one process each calibration worker is forked from.

multiprocessing's forkserver imports this module, its preload
(worker_forkserver.py), once, when the daemon's first pool starts a worker.
Here it dies with the daemon, and it imports jwst and warms up as a worker
would (steps/worker_warmup.py), so every worker is a fork of a warm process:
no worker pays the import again, at a pool's start or at a replacement
(docs/design.md, "Worker processes"). The server only ever forks from its
main thread; the native threads the import leaves (the two OpenBLAS pools,
pyarrow's jemalloc) stop or reset themselves around fork (docs/design.md).
"""

from __future__ import annotations

import os
import signal

from calstream.daemon.doers.child_processes import die_with_parent
from calstream.daemon.doers.worker_forkserver import PARENT_ENV

_JEMALLOC_CONF, _NO_THREAD = "JE_ARROW_MALLOC_CONF", "background_thread:false"

# Inherited by every worker forked from here, with this module: a worker's
# parent is this process, not the daemon (worker_process.worker_main). Only
# the server imports this module: the daemon and its workers find it in
# sys.modules, inherited, or not at all.
SERVER_PID = os.getpid()


def _serve() -> None:
    # A SIGKILLed daemon takes the server along (its workers follow the
    # server: worker_process.worker_main); the server would otherwise live on
    # while any worker holds its "alive" pipe.
    die_with_parent(int(os.environ.get(PARENT_ENV, "0") or 0), signal.SIGKILL)
    # pyarrow's jemalloc (stcal imports pyarrow with jwst) starts a background
    # thread when it loads; a fork copies no thread, and jemalloc resets that
    # one's state in the child anyway. Without it the server forks with one
    # thread: its main, the OpenBLAS pools being stopped by their own fork
    # handler. A worker's environment is the daemon's (worker_process).
    conf = os.environ.get(_JEMALLOC_CONF)
    os.environ[_JEMALLOC_CONF] = f"{conf},{_NO_THREAD}" if conf else _NO_THREAD
    try:
        from calstream.steps.worker_warmup import warm_up

        warm_up()
    except Exception:  # noqa: BLE001 - each worker's initializer warms up again and says why
        pass


if os.environ.get(PARENT_ENV):
    _serve()
