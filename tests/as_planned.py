"""Stages 2 and 3 in the offline tests, exactly as the daemon runs them.

The planner turns a detector1 product event (and the arrival's header) into
an `Exposure` record, builds the level-2 association with `build_level2`
(level 3: `build_level3`, checked by `validate_level3`), and the stage
workers run it with `association_run.run_association`. These helpers do the
same, minus Kafka: no test builds or runs associations its own way.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from calstream.steps.association_run import run_association
from calstream.steps.associations import (
    Exposure,
    association_filename,
    build_level2,
    build_level3,
    validate_level3,
)
from calstream.steps.crds_env import CRDS_VARS
from calstream.steps.detector1 import run_detector1
from calstream.steps.environment import environ
from calstream.steps.routing import route
from calstream.steps.synthetic.kit import build_kit


@contextlib.contextmanager
def offline_kit(root: Path, timings: dict[str, float], *args: Any, **kwargs: Any):
    """A synthetic kit built in ``root/kit`` (`build_kit`'s arguments), with
    only its CRDS settings in the environment for the block: none of the
    session's may leak in."""
    t0 = time.perf_counter()
    kit = build_kit(root / "kit", *args, **kwargs)
    timings["kit"] = time.perf_counter() - t0
    with environ({**dict.fromkeys(CRDS_VARS), **kit.crds_env}):
        yield kit


def suffix_of(path: str | Path) -> str:
    """The product suffix of a file name: ..._cal.fits -> "cal"."""
    return Path(path).name.rsplit("_", 1)[1].split(".")[0]


def products_of(result: Mapping[str, Any]) -> dict[str, str]:
    """A run's FITS products by suffix (the association it archives left out)."""
    return {suffix_of(p): p for p in result["outputs"] if p.endswith(".fits")}


def exposure(header_source: str | Path, products: Iterable[str | Path],
             **header: Any) -> Exposure:
    """The planner's record of an exposure: the primary header of
    ``header_source`` (its uncal file, or a product of it) with ``header``'s
    changes, and its ``products`` by suffix, as absolute paths."""
    from astropy.io import fits

    source = Path(header_source)
    keywords = {**dict(fits.getheader(source, 0)), **header}
    return Exposure(source.name.rsplit("_", 1)[0], keywords,
                    {suffix_of(p): str(Path(p).resolve()) for p in products})


def level2_association(science: Exposure, seen: Iterable[Exposure] = ()) -> dict[str, Any]:
    """The association the planner plans for ``science`` once its visit is
    complete: the companions among ``seen`` that jwst's rules take."""
    return build_level2(route(science.header), science, list(seen), visit_complete=True)


def run_stage2(science: Exposure, association: Mapping[str, Any],
               output_dir: str | Path) -> dict[str, Any]:
    """The stage-2 worker's run of ``science``'s ``association``: the
    pipeline its route names, the association under its jwst file name."""
    return run_association(route(science.header).stage2, dict(association),
                           association_filename(association), str(output_dir))


def level3_association(members: Iterable[Exposure], *, science: Exposure | None = None,
                       acid: str | None = None) -> dict[str, Any]:
    """The level-3 association the planner builds of ``members`` along
    ``science``'s route (default: the first member's), checked as the
    planner checks it; jwst's own loader accepts it too."""
    from jwst.associations import load_asn

    members = list(members)
    asn = build_level3(route((science or members[0]).header), members, acid=acid)
    validate_level3(asn)
    load_asn(json.dumps(asn))
    return asn


def run_stage3(pipeline: str, association: Mapping[str, Any],
               output_dir: str | Path) -> dict[str, Any]:
    """The stage-3 worker's run of ``association`` under its jwst file name."""
    return run_association(pipeline, dict(association), association_filename(association),
                           str(output_dir))


def through_stage2(uncal_files: Iterable[Path], root: Path,
                   timings: dict[str, float]) -> list[tuple[Exposure, dict[str, Any]]]:
    """Every exposure through detector1 (products in ``root/rate``), then
    stage 2 on the association the planner builds with the others as
    possible companions (products in ``root/cal/<exposure id>``): the records
    with the products of both stages, each with its level-2 association.
    ``timings`` gets each run's wall time."""
    stage1 = []
    for uncal in uncal_files:
        t0 = time.perf_counter()
        stage1.append(exposure(uncal, run_detector1(str(uncal), str(root / "rate"))["outputs"]))
        timings[f"detector1 {stage1[-1].exposure_id}"] = time.perf_counter() - t0
    done = []
    for science in stage1:
        asn = level2_association(science, [e for e in stage1 if e is not science])
        t0 = time.perf_counter()
        result = run_stage2(science, asn, root / "cal" / science.exposure_id)
        timings[f"stage 2 {science.exposure_id}"] = time.perf_counter() - t0
        record = Exposure(science.exposure_id, science.header,
                          {**science.products, **products_of(result)})
        done.append((record, asn))
    return done


def report_timings(timings: Mapping[str, float]) -> None:
    """The offline tests' timings, shown with `pytest -s`."""
    print("\n" + "\n".join(f"  {k}: {v:.2f} s" for k, v in timings.items()))
