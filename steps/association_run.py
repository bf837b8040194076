"""Any stage-2 or stage-3 pipeline on an association, as a warm worker calls it.

The association is written next to the products, under its jwst file name, and
becomes one of the run's outputs: operations archive the association with the
products it made.
"""

from __future__ import annotations

import importlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

from calstream.steps.crds_env import refresh_crds
from calstream.steps.detector1 import warm_up


def resolve_pipeline(name: str):
    """A pipeline alias (calwebb_image2, ...) or a dotted class name -> the class."""
    from stpipe.utilities import resolve_step_class_alias

    dotted = resolve_step_class_alias(name)
    module, _, cls = dotted.rpartition(".")
    if not module:
        raise ValueError(f"unknown pipeline {name!r}")
    return getattr(importlib.import_module(module), cls)


def _files(directory: Path) -> dict[Path, tuple[int, int]]:
    return {p: (st.st_mtime_ns, st.st_size) for p in directory.iterdir()
            if p.is_file() and not p.name.startswith(".") and (st := p.stat())}


def run_association(pipeline: str, association: dict[str, Any], asn_filename: str,
                    output_dir: str, *, steps: dict | None = None) -> dict[str, Any]:
    """Run ``pipeline`` on ``association``; products go to ``output_dir``.

    Returns the same summary as run_detector1: outputs (absolute paths, the
    association file included), pipeline, jwst_version, crds_context (as the
    products record it), duration_seconds.
    """
    warm_up()
    import jwst
    from stpipe import Pipeline

    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    asn_path = out / Path(asn_filename).name
    asn_path.write_text(json.dumps(association, indent=1))
    cls = resolve_pipeline(pipeline)
    refresh_crds()
    before = _files(out)
    kwargs: dict[str, Any] = {"output_dir": str(out), "save_results": True,
                              "configure_log": False}
    if issubclass(cls, Pipeline):
        kwargs["steps"] = steps or {}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # Members are absolute paths on purpose: the association runs from a
        # scratch directory and is then moved beside the products.
        warnings.filterwarnings("ignore", "Input association file contains path information")
        result = cls.call(str(asn_path), **kwargs)
    duration = time.perf_counter() - t0
    if hasattr(result, "close"):
        result.close()
    outputs = sorted(str(p) for p, stamp in _files(out).items()
                     if before.get(p) != stamp or p == asn_path)
    return {"outputs": outputs, "pipeline": pipeline, "jwst_version": jwst.__version__,
            "crds_context": _context(outputs), "duration_seconds": round(duration, 3)}


def _context(outputs: list[str]) -> str | None:
    from astropy.io import fits

    for path in outputs:
        if path.endswith(".fits"):
            context = fits.getheader(path, 0).get("CRDS_CTX")
            if context:
                return str(context)
    return None
