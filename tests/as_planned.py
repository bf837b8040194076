"""Stage 2 in the offline tests, exactly as the daemon runs it.

The planner turns a detector1 product event (and the arrival's header) into
an `Exposure` record, builds the level-2 association with `build_level2`,
and the stage-2 worker runs it with `association_run.run_association`. These
helpers do the same, minus Kafka: no test builds associations its own way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from calstream.steps.association_run import run_association
from calstream.steps.associations import Exposure, association_filename, build_level2
from calstream.steps.routing import route


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
