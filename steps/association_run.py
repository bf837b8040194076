"""Any stage-2 or stage-3 pipeline on an association, as a warm worker calls it.

The one runner of stage 2 and stage 3: the daemon's work orders and the
offline tests both call `run_association`. The association is written next
to the products, under its jwst file name, and becomes one of the run's
outputs: operations archive the association with the products it made.

Members are absolute paths (the planner names the products in the store),
so jwst 3.0 finds them whatever directory it resolves them from (it is not
consistent: jwst issues 5950, 8738, 10815) and the run changes the process's
working directory for WFSS only, where jwst 3.0 assumes strun runs beside the
files: spec2 keeps just the file name of its `sourcecat` (and `segmap`,
`direct_image`) members and opens them from the working directory, so it runs
where they are; spec3 writes its x1d and c1d into the working directory
whatever `output_dir` says, so it runs in the output directory. (A warm worker
runs one item at a time, and the directory is restored.) ``steps`` are the
configured step parameters (`step_parameters`), passed as strun's
``--steps.<step>.<arg>``: the CRDS parameter reference files apply to
everything they do not set. Overrides jwst 3.0 needs for some inputs come from
`pipeline_settings`; ``steps`` win.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from calstream.steps.crds_env import refresh_crds
from calstream.steps.member_references import configured, prefetch_members
from calstream.steps.pipeline_catalog import catalog
from calstream.steps.pipeline_settings import settings_for
from calstream.steps.worker_warmup import warm_up


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


def _with_corrections(association: dict[str, Any], corrections: dict[str, dict],
                      workdir: Path) -> dict[str, Any]:
    """A copy of the association whose corrected members point at corrected copies."""
    from calstream.steps.pointing import apply_pointing

    asn = json.loads(json.dumps(association))
    for product in asn["products"]:
        for member in product["members"]:
            fix = corrections.get(Path(member["expname"]).name)
            if fix:
                copy = workdir / Path(member["expname"]).name
                apply_pointing(member["expname"], fix["keywords"], copy, note=fix["note"])
                member["expname"] = str(copy)
    return asn


def run_association(pipeline: str, association: dict[str, Any], asn_filename: str,
                    output_dir: str, *, steps: dict | None = None,
                    corrections: dict[str, dict] | None = None,
                    annotation: str | None = None,
                    admitted: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run ``pipeline`` on ``association``; products go to ``output_dir``.

    ``corrections`` maps a member's file name to {"keywords", "note"}: corrected
    pointing applied to a private copy of that member before the run (the
    association archived with the products still names the original).
    ``annotation`` is written into every FITS product's history after the run.

    ``admitted``: the order's inputs as its admission read them (path,
    digest, signature): checked before the run and after it
    (admitted_input.check_order_inputs), so that only the bytes the
    admission judged (their digests, the pointing gate's headers) are
    calibrated.

    Returns the same summary as run_detector1: outputs (absolute paths, the
    association file included), pipeline, jwst_version, crds_context (as the
    products record it), duration_seconds.
    """
    from calstream.steps.admitted_input import check_order_inputs, check_order_inputs_after

    checked = check_order_inputs(admitted or [])  # before jwst's import: refused at once
    warm_up()
    import jwst
    from stpipe import Pipeline

    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    asn_path = out / Path(asn_filename).name
    asn_path.write_text(json.dumps(association, indent=1))
    run_path = asn_path
    if corrections:
        # A dot-directory: the product store does not publish it, and it goes
        # with the scratch directory.
        inputs = out / ".inputs"
        run_path = inputs / asn_path.name
        fixed = _with_corrections(association, corrections, inputs)
        run_path.write_text(json.dumps(fixed, indent=1))
    cls = resolve_pipeline(pipeline)
    refresh_crds()
    before = _files(out)
    kwargs: dict[str, Any] = {"output_dir": str(out), "save_results": True,
                              "configure_log": False}
    passed = settings_for(pipeline, association, steps)
    if issubclass(cls, Pipeline):
        kwargs["steps"] = passed
    else:  # a single step (calwebb_wfs-image3): its own parameters, as strun --<arg>
        kwargs.update(passed.get(catalog()[pipeline]["single_step"], {})
                      if pipeline in catalog() else {})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # Members are absolute paths on purpose: the association runs from a
        # scratch directory and is then moved beside the products.
        warnings.filterwarnings("ignore", "Input association file contains path information")
        with _working_directory(_wfss_directory(association, out)):
            result = _run(cls, str(run_path), kwargs)
    duration = time.perf_counter() - t0
    if hasattr(result, "close"):
        result.close()
    check_order_inputs_after(admitted or [], checked)
    outputs = sorted(str(p) for p, stamp in _files(out).items()
                     if before.get(p) != stamp or p == asn_path)
    if annotation:
        from calstream.steps.pointing import annotate

        annotate(outputs, annotation)
    return {"outputs": outputs, "pipeline": pipeline, "jwst_version": jwst.__version__,
            "steps": passed,
            "crds_context": _context(outputs), "duration_seconds": round(duration, 3)}


def _run(cls, run_path: str, kwargs: dict[str, Any]):
    """``cls.call(run_path, **kwargs)``; a pipeline made as ``call`` makes it,
    and first every science member's references looked up, not only the
    first member's (stpipe's prefetch): a missing one parks the run before
    it starts, not hours into it (steps/member_references.py)."""
    from stpipe import Pipeline

    if not issubclass(cls, Pipeline):
        return cls.call(run_path, **kwargs)
    pipeline = configured(cls, run_path, kwargs)
    prefetch_members(pipeline, run_path)
    return pipeline.run(run_path)


def _wfss_directory(association: dict[str, Any], out: Path) -> Path | None:
    """Where a WFSS association must run (see the module docstring), or None."""
    for product in association.get("products", []):
        for member in product.get("members", []):
            if member.get("exptype") == "sourcecat" and Path(member["expname"]).is_absolute():
                return Path(member["expname"]).parent
    if str(association.get("asn_rule", "")).startswith("Asn_Lv3WFSS"):
        return out
    return None


@contextlib.contextmanager
def _working_directory(directory: Path | None):
    if directory is None:
        yield
        return
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def _context(outputs: list[str]) -> str | None:
    from astropy.io import fits

    for path in outputs:
        if path.endswith(".fits"):
            context = fits.getheader(path, 0).get("CRDS_CTX")
            if context:
                return str(context)
    return None
