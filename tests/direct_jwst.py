"""The direct runs a jwst user makes, with jwst's own tools only.

Nothing here comes from calstream: the associations are what jwst's
generator (`asn_generate`) makes of the program's pool, written where the
products are, as its command line writes them; each pipeline is looked up by
its alias as `strun` does and run with `Pipeline.call`. A fidelity test
compares calstream's products with these, so calstream's own association
builder or runner must not be used here (it would check calstream against
itself).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any


def generated_associations(pool: Path) -> list[Any]:
    """Every association `asn_generate POOL` makes (levels 2 and 3), in its order."""
    from jwst.associations import AssociationPool
    from jwst.associations.main import Main

    return list(Main.cli(["--dry-run"], pool=AssociationPool.read(str(pool))).associations)


def is_level3(asn: Any) -> bool:
    return "Lv3" in asn["asn_rule"]


def members(asn: Any) -> list[tuple[str, str]]:
    """(file name, exptype) of every member of the association's products."""
    return [(Path(m["expname"]).name, m["exptype"])
            for p in asn["products"] for m in p["members"]]


def write_association(asn: Any, directory: Path) -> Path:
    """The association in ``directory`` under the name asn_generate gives it."""
    name, text = asn.dump(format="json")
    path = directory / name
    path.write_text(text)
    return path


def steps_in_effect(record: dict) -> dict:
    """The step parameters a provenance record says the run used ({} if none)."""
    for holder in (record, record.get("event", {})):
        parameters = holder.get("parameters")
        if isinstance(parameters, dict):
            return dict(parameters.get("steps") or {})
    return {}


def run_pipeline(alias: str, source: Path, output_dir: Path, steps: dict | None) -> float:
    """``alias`` (calwebb_image2, ...) on ``source`` (an uncal file or an
    association), its products saved in ``output_dir``; the CPU time it took."""
    import time

    from stpipe.utilities import resolve_step_class_alias

    module, _, name = resolve_step_class_alias(alias).rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    t0 = time.process_time()
    # From the products' directory, as a user runs strun there: jwst 3.0
    # resolves an association's members from the working directory in places.
    with warnings.catch_warnings(), contextlib.chdir(output_dir):
        warnings.simplefilter("ignore")
        result = cls.call(str(source), output_dir=str(output_dir), save_results=True,
                          steps=steps or {})
    if hasattr(result, "close"):
        result.close()
    return time.process_time() - t0
