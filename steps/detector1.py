"""calwebb_detector1 on one uncal file, as a warm worker process calls it,
or the pipeline jwst runs in its place on darks (calwebb_dark) and guide-star
data (calwebb_guider): `pipeline` names it.

Importing this module is cheap and has no side effects; jwst is imported by
`worker_warmup.warm_up` (about 3 s), explicitly from a worker initializer or
else on the first run, so a warm worker pays that once.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from calstream.steps.admitted_input import PinnedInput
from calstream.steps.crds_env import refresh_crds
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.steps.worker_warmup import warm_up

PIPELINE = "calwebb_detector1"
# The uncal-file pipelines, by alias (jwst/stpipe/integration.py).
PIPELINES = {PIPELINE: "Detector1Pipeline", "calwebb_dark": "DarkPipeline",
             "calwebb_guider": "GuiderPipeline"}


def _exposure_stem(input_path: Path) -> str:
    try:
        return parse_exposure_name(input_path.name).exposure_id
    except BadName:
        stem = input_path.name.removesuffix(".fits")
        return stem.rsplit("_", 1)[0] if stem.endswith("_uncal") else stem


def _header_value(path: Path, keyword: str) -> str | None:
    from astropy.io import fits

    value = fits.getheader(path, 0).get(keyword)
    return None if value is None else str(value)


def _meta(model, *names: str):
    node = getattr(model, "meta", None)
    for name in names:
        node = getattr(node, name, None)
    return None if node is None else str(node)


def _products(directory: Path, stem: str) -> dict[Path, tuple[int, int]]:
    return {
        p: (st.st_mtime_ns, st.st_size)
        for p in directory.glob(f"{stem}_*")
        if p.is_file() and (st := p.stat())
    }


# The steps that can split an exposure's rows over several processes (stcal).
MULTICORE_STEPS = ("jump", "ramp_fit")


def with_cores(steps: dict, cores: int) -> dict:
    """``steps`` with ``maximum_cores`` for the steps that can use several
    cores, where the operator did not set it. Changes no product byte (see
    deciders/core_sharing.py), so it is not a parameter of the work."""
    if cores <= 1:
        return steps
    return {**steps, **{name: {"maximum_cores": str(cores), **steps.get(name, {})}
                        for name in MULTICORE_STEPS}}


def run_detector1(input_path: str, output_dir: str, *, steps: dict | None = None,
                  pipeline: str = PIPELINE, cores: int = 1, input_digest: str | None = None,
                  input_signature: list[int] | None = None) -> dict:
    """Run Detector1Pipeline (or `pipeline`: calwebb_dark, calwebb_guider) on
    `input_path`, writing products into `output_dir`.

    Uses the pipeline's ``.call`` so CRDS parameter references apply, then
    `steps` overrides: the products are those a direct ``.call`` makes. CRDS is configured by the environment (see crds_env);
    a changed environment since the previous run is picked up. The first call
    runs `warm_up`. ``cores`` > 1 lets jump detection and ramp fitting of
    calwebb_detector1 use that many processes (jwst's ``maximum_cores``).
    ``input_digest``: the bytes the arrival names; the file must hold them
    before and after the run (``input_signature``: the stat signature the
    admission read them under), else InputChanged (steps/admitted_input.py);
    jwst reads the input pinned, so a name moved or deleted after the check
    changes nothing.

    Returns a JSON-serialisable summary: outputs (absolute paths written),
    pipeline, jwst_version, crds_context (as recorded in the rate file),
    duration_seconds (pipeline wall time) and pointing_quality (ENGQLPTG of
    the input; None if absent). Exceptions propagate; see failures.classify_failure.
    """
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Before the warm-up: a replaced file costs no jwst import. Pinned, jwst
    # reads the checked bytes even if the inbox name is moved, deleted or
    # replaced meanwhile (steps/admitted_input.py).
    with (PinnedInput(input_path, input_digest, input_signature, out)
          if input_digest is not None else contextlib.nullcontext()) as pinned:
        source = Path(input_path).resolve()
        read_path = pinned.name if pinned is not None else str(source)
        summary = _run(read_path, source, out, steps=steps,
                       pipeline=pipeline, cores=cores)
        if pinned is not None:  # replaced while jwst read it: not these bytes' products
            pinned.confirm()
    return summary


def _run(read_path: str, source: Path, out: Path, *, steps: dict | None, pipeline: str,
         cores: int) -> dict:
    """The pipeline on ``read_path`` (the input, or the name its pin gives it:
    its own file name), products for ``source``'s exposure into ``out``."""
    warm_up()
    import jwst
    import jwst.pipeline

    if pipeline not in PIPELINES:
        raise ValueError(f"{pipeline!r} is not an uncal-file pipeline ({', '.join(PIPELINES)})")
    pipeline_class = getattr(jwst.pipeline, PIPELINES[pipeline])

    stem = _exposure_stem(source)
    refresh_crds()

    # output_dir may be shared with other exposures and earlier runs: the
    # products are this exposure's files that are new or rewritten.
    before = _products(out, stem)
    t0 = time.perf_counter()
    # configure_log=False: stpipe would add its own stderr handler; the
    # caller decides where a run's log goes (the worker pool: one file a run).
    run_steps = with_cores(steps or {}, cores if pipeline == PIPELINE else 1)
    result = pipeline_class.call(
        read_path, output_dir=str(out), save_results=True, steps=run_steps,
        configure_log=False,
    )
    duration = time.perf_counter() - t0
    # The context the products record (CRDS_CTX) and the input's pointing
    # quality, from the model in memory rather than by opening files again:
    # two FITS reads less per exposure (its fixed cost; issue 15).
    context = pointing_quality = None
    if result is not None:
        context = _meta(result, "ref_file", "crds", "context_used")
        pointing_quality = _meta(result, "visit", "engdb_pointing_quality")  # ENGQLPTG
        result.close()
    if pointing_quality is None:  # the pinned bytes: the inbox name may be gone by now
        pointing_quality = _header_value(Path(read_path), "ENGQLPTG")

    outputs = sorted(
        str(p)
        for p, stamp in _products(out, stem).items()
        if before.get(p) != stamp and p != source
    )
    # rate, or ramp when ramp fitting was skipped; dark and guider make one product
    primary = [p for p in outputs if p.endswith(("_rate.fits", "_ramp.fits"))] or outputs
    if context is None and primary:
        context = _header_value(Path(primary[0]), "CRDS_CTX")
    return {
        "outputs": outputs,
        "pipeline": pipeline,
        "jwst_version": jwst.__version__,
        "crds_context": context,
        "duration_seconds": round(duration, 3),
        "pointing_quality": pointing_quality,
        "steps": steps or {},
    }
