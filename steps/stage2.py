"""calwebb_image2 and calwebb_spec2 on one level-2 association, as a warm worker calls them.

Same contract as `detector1.run_detector1`: importing this module is cheap,
jwst is imported by the shared `detector1.warm_up`, CRDS follows the
environment (`crds_env.refresh_crds`), and the summary is JSON-serialisable.

The input is always a level-2 association (one product, one science member,
plus its companions); the pipelines name their products after the product
name, so the outputs are the files in `output_dir` that start with it and
are new or rewritten. A rateints science member (TSO, coronagraphy, AMI)
gives calints and, for spec2, x1dints: the pipelines choose the suffixes
from the input model, nothing here needs to.

Member names are relative to the association's directory, as the archive
writes them; but jwst 3.0 resolves them inconsistently (spec2 from the
association's directory, image2 and the WFSS direct-image products from the
working directory: jwst issues 5950, 8738, 10815). A run therefore happens
in the association's directory, as operations run it. That changes the
process's working directory for the run: a warm worker runs one pipeline at
a time, and nothing else in it may depend on the working directory.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

from calstream.steps.crds_env import refresh_crds
from calstream.steps.detector1 import warm_up

IMAGE2 = "calwebb_image2"
SPEC2 = "calwebb_spec2"

# The product whose header tells which CRDS context calibrated the exposure.
_PRIMARY_SUFFIXES = ("_cal.fits", "_calints.fits")

__all__ = [
    "IMAGE2",
    "SPEC2",
    "read_level2_asn",
    "run_image2",
    "run_spec2",
    "spec2_workarounds",
    "warm_up",
]

_cwd_lock = threading.Lock()


def read_level2_asn(asn_path: str | Path) -> tuple[str, Path]:
    """The product name and the science member's path of a level-2 association.

    Only what the adapter needs: jwst validates the association itself when
    it loads it. Member paths are relative to the association's directory,
    as jwst resolves them.
    """
    path = Path(asn_path)
    asn = json.loads(path.read_text())
    products = asn.get("products") or []
    if len(products) != 1:
        # One product per level-2 association: more would be calibrated into
        # one output_dir under names this run could not tell apart.
        raise ValueError(f"{path.name}: a level-2 association needs one product, has {len(products)}")
    product = products[0]
    science = [m["expname"] for m in product.get("members", []) if m.get("exptype") == "science"]
    if len(science) != 1:
        raise ValueError(f"{path.name}: needs one science member, has {len(science)}")
    return str(product["name"]), (path.parent / science[0]).resolve()


def _products(directory: Path, stem: str) -> dict[Path, tuple[int, int]]:
    return {
        p: (st.st_mtime_ns, st.st_size)
        for p in directory.glob(f"{stem}_*")
        if p.is_file() and (st := p.stat())
    }


def _header_value(path: Path, keyword: str) -> str | None:
    from astropy.io import fits

    value = fits.getheader(path, 0).get(keyword)
    return None if value is None else str(value)


def _is_multi_integration(path: Path) -> bool:
    from astropy.io import fits

    return fits.getheader(path, "SCI").get("NAXIS", 0) == 3


def spec2_workarounds(science: Path) -> dict:
    """Step overrides that jwst 3.0 needs to calibrate `science` at all.

    MIR_LRS-FIXEDSLIT from rateints: spec2 turns the LRS exposure into a
    SlitModel before targ_centroid, so its "is this a cube" test no longer
    sees the integrations and resample_spec fails on the 3-D slit ("not a
    2D image"). Time series get no s2d anyway; skipping resample_spec gives
    calints and x1dints.
    """
    if not science.exists():
        return {}
    exp_type = _header_value(science, "EXP_TYPE")
    if exp_type == "MIR_LRS-FIXEDSLIT" and _is_multi_integration(science):
        return {"resample_spec": {"skip": True}}
    return {}


def _merge_steps(defaults: dict, steps: dict | None) -> dict:
    merged = {name: dict(pars) for name, pars in defaults.items()}
    for name, pars in (steps or {}).items():
        merged[name] = {**merged.get(name, {}), **pars}
    return merged


def _run(
    pipeline_class, alias: str, asn_path: str, output_dir: str, steps: dict | None,
    defaults=lambda science: {},
) -> dict:
    import jwst

    asn = Path(asn_path).resolve()
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    product_name, science = read_level2_asn(asn)
    stem = Path(product_name).name
    pointing_quality = _header_value(science, "ENGQLPTG") if science.exists() else None
    # The caller's settings win over the workarounds.
    steps = _merge_steps(defaults(science), steps)
    refresh_crds()

    before = _products(out, stem)
    t0 = time.perf_counter()
    with _cwd_lock, contextlib.chdir(asn.parent):
        # configure_log=False: the caller decides where a run's log goes.
        results = pipeline_class.call(
            str(asn), output_dir=str(out), save_results=True, steps=steps or {},
            configure_log=False,
        )
    duration = time.perf_counter() - t0
    for model in results or []:
        model.close()

    outputs = sorted(
        str(p) for p, stamp in _products(out, stem).items() if before.get(p) != stamp
    )
    primary = [p for p in outputs if p.endswith(_PRIMARY_SUFFIXES)] or outputs
    context = _header_value(Path(primary[0]), "CRDS_CTX") if primary else None
    return {
        "outputs": outputs,
        "pipeline": alias,
        "jwst_version": jwst.__version__,
        "crds_context": context,
        "duration_seconds": round(duration, 3),
        "pointing_quality": pointing_quality,
    }


def run_image2(asn_path: str, output_dir: str, *, steps: dict | None = None) -> dict:
    """Run Image2Pipeline on a level-2 association, writing products into `output_dir`.

    ``Image2Pipeline.call`` so CRDS parameter references apply, then `steps`
    overrides. Products: cal (or calints for a rateints member) and, for
    non-TSO 2-D imaging, i2d. Returns outputs (absolute paths written),
    pipeline, jwst_version, crds_context (of the cal/calints product),
    duration_seconds and pointing_quality (ENGQLPTG of the science member).
    Exceptions propagate; see failures.classify_failure.
    """
    warm_up()
    from jwst.pipeline import Image2Pipeline

    return _run(Image2Pipeline, IMAGE2, asn_path, output_dir, steps)


def run_spec2(asn_path: str, output_dir: str, *, steps: dict | None = None) -> dict:
    """Run Spec2Pipeline on a level-2 association, writing products into `output_dir`.

    As `run_image2`; products are cal/calints and, by mode, s2d, s3d, x1d or
    x1dints. jwst raises NoDataOnDetectorError (exit status 64, "skipped")
    when no spectrum falls on the detector. `spec2_workarounds` are applied
    under `steps`.
    """
    warm_up()
    from jwst.pipeline import Spec2Pipeline

    return _run(Spec2Pipeline, SPEC2, asn_path, output_dir, steps, spec2_workarounds)
