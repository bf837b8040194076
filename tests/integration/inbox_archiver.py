"""A worker task for tests: detector1 as the daemon runs it, with the inbox
cleaned the moment jwst has read the input and before the worker's check
after the run -- the latest an archiver can move or delete a file while the
run still goes, or a file can be replaced under its name.

Imported in the spawned worker (the pool runs tasks by ``module:function``);
the pipeline class's ``call`` is wrapped for that one run and put back."""

from __future__ import annotations

import os


def detector1_then_archived(*, archive: str, replacement: str | None = None, **kwargs):
    """``run_detector1(**kwargs)``, its inbox file deleted (``archive``
    "delete"), moved aside ("move") or replaced by ``replacement``'s bytes
    ("replace") once the pipeline's ``call`` returns."""
    import jwst.pipeline

    from calstream.steps.detector1 import PIPELINE, PIPELINES, run_detector1

    cls = getattr(jwst.pipeline, PIPELINES[kwargs.get("pipeline", PIPELINE)])
    inbox = kwargs["input_path"]
    own = cls.__dict__.get("call")
    called = cls.call

    def call(*args, **options):
        result = called(*args, **options)
        if archive == "delete":
            os.unlink(inbox)
        elif archive == "move":
            os.replace(inbox, f"{inbox}.archived")
        else:
            os.replace(replacement, inbox)
        return result

    cls.call = staticmethod(call)
    try:
        return run_detector1(**kwargs)
    finally:
        if own is None:
            del cls.call
        else:
            cls.call = own
