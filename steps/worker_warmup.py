"""The initializer of every calibration worker process, whatever its stage.

Importing this module is cheap; `warm_up` imports jwst (about 6 CPU s) once
per process: in the daemon's worker server, whose forks the workers are
(daemon/doers/worker_server.py), or else from a worker's initializer or on
its first run, so no run pays it twice.
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
    in the kernel faulting fresh pages in; and it parses each datamodel
    schema once (schema_memo.py), not on every value a step validates.
    """
    if _warm.is_set():
        return
    import asdf
    import jwst.pipeline  # noqa: F401

    from calstream.steps.schema_memo import remember_parsed_schemas
    from calstream.steps.worker_memory import keep_freed_memory

    keep_freed_memory()
    remember_parsed_schemas()

    asdf.get_config().extensions  # noqa: B018 - loads them: the property is the loader
    gc.collect()
    gc.freeze()
    _warm.set()


# Unfrozen objects (garbage included) a worker may hold between runs before
# they are collected and the survivors frozen. A warm SUB160 detector1 run
# leaves about 5,000 (mostly its last steps' garbage) and 200 more alive
# each time; a worker's first run of a pipeline leaves tens of thousands
# alive (the schemas it parsed, the modules it imported on first use).
SURVIVORS_TO_FREEZE = 10_000


def freeze_survivors(threshold: int = SURVIVORS_TO_FREEZE) -> bool:
    """After a run: freeze what it left alive, if that is enough to matter.

    The freeze in ``warm_up`` covers what importing jwst made. A worker's
    first run of a pipeline adds more for good (the schemas it parsed, the
    steps' modules imported on first use, their caches), and stpipe's
    ``gc.collect()`` after every step walked all of it again, every run:
    measured at SUB160 (bench/README.md, session 10), 0.10-0.20 s of
    collection a run, growing, against 0.03-0.06 s once they are frozen.
    Called between runs, so a freeze holds no run's data: garbage is
    collected first and what survives is alive across runs by definition.
    Whenever the collection is paid for, its survivors are frozen: an
    image2 run leaves 11,000-12,500 objects, most of them garbage, and
    collecting without freezing would have paid a full collection after
    every run for nothing (the next run's first collection would have found
    the same garbage). Frozen objects that die later are freed by reference
    counting as always; only a cycle among them would wait for the worker's
    recycling, which bounds it. Counting the unfrozen objects costs about
    1 ms when there are few. True if it collected and froze.
    """
    if len(gc.get_objects()) <= threshold:
        return False
    gc.collect()
    gc.freeze()
    return True
