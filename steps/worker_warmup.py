"""The initializer of every calibration worker process, whatever its stage.

Importing this module is cheap; `warm_up` imports jwst (about 3 s) once per
worker, from the pool's initializer or else on a worker's first run, so no
run pays it twice.
"""

from __future__ import annotations

import gc
import threading

_warm = threading.Event()


def warm_up() -> None:
    """Import jwst and its pipelines, then exclude everything imported from GC scans.

    stpipe runs a full ``gc.collect()`` after every step; with jwst loaded that
    walks millions of objects, about 0.15 s a step, 2.5 s of a 3.5 s detector1
    run on a SUB160 exposure. Freezing the objects alive after the import (the
    modules, schemas and caches a worker keeps anyway) cuts the run to about
    1 s. Idempotent; it changes this process's garbage collector, which is
    why it belongs in a worker process.

    Also loaded here, not in the first run: asdf's extensions (asdf-astropy's
    and the datamodels' manifests, parsed from YAML), which importing jwst
    leaves to the first datamodel opened. They cost a worker's first
    exposure about 0.45 s of CPU at SUB160 (1.2 s against 0.77 s for the
    next ones), and in a batch that worker finished last (issue 15).

    And the process keeps the memory its runs free for its next arrays
    (worker_memory.py): a full-frame run no longer spends a third of its time
    in the kernel faulting fresh pages in.
    """
    if _warm.is_set():
        return
    import asdf
    import jwst.pipeline  # noqa: F401

    from calstream.steps.worker_memory import keep_freed_memory

    keep_freed_memory()

    asdf.get_config().extensions  # noqa: B018 - loads them: the property is the loader
    gc.collect()
    gc.freeze()
    _warm.set()
