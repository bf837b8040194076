"""What steps and parameters each jwst pipeline has, without importing jwst.

The configuration (`daemon/operations/step_parameters.py`) checks an
operator's ``[steps.<pipeline>.<step>]`` tables when it loads, as strun
would check ``--steps.<step>.<arg>``, but the daemon never imports jwst.
So the pipelines' step names and parameter specs are kept in
``pipeline_catalog.json``, made from the installed jwst by

    python -m calstream.steps.pipeline_catalog --write

`tests/unit/test_pipeline_catalog.py` fails when the installed jwst's
pipelines no longer match the file (a new jwst: run the command again).
A single step run as a "pipeline" (calwebb_wfs-image3 is WfsCombineStep)
has one step, under its own name (``single_step``), whose parameters are
passed to it directly.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

CATALOG_FILE = Path(__file__).with_name("pipeline_catalog.json")


@cache
def catalog() -> dict[str, dict[str, Any]]:
    """{pipeline alias: {"class", "single_step" (or None), "steps": {step: {arg: spec}}}}."""
    made = json.loads(CATALOG_FILE.read_text())
    made.pop("*")
    return made


@cache
def common_parameters() -> dict[str, str]:
    """The parameters every step has (skip, save_results, suffix, ...): {arg: spec}."""
    return json.loads(CATALOG_FILE.read_text())["*"]["steps"]["*"]


def parameter_spec(pipeline: str, step: str, name: str) -> str | None:
    """The spec of ``name`` in ``pipeline``'s ``step`` (None: no such parameter)."""
    own = catalog()[pipeline]["steps"][step]
    return own.get(name) or common_parameters().get(name)


def from_installed_jwst() -> dict[str, dict[str, Any]]:
    """The catalogue as the installed jwst has it (imports jwst: slow)."""
    import importlib

    from jwst.stpipe import Step
    from stpipe import Pipeline
    from stpipe.entry_points import get_steps

    def full_spec(step_class) -> dict[str, str]:
        spec = step_class.load_spec_file() or {}
        return {k: str(v) for k, v in sorted(spec.items()) if not isinstance(v, dict)}

    common = full_spec(Step)

    def spec_of(step_class) -> dict[str, str]:
        # What every step has (skip, save_results, suffix, ...) is kept once.
        return {k: v for k, v in full_spec(step_class).items() if common.get(k) != v}

    found: dict[str, dict[str, Any]] = {"*": {"class": "jwst.stpipe.Step", "single_step": None,
                                               "steps": {"*": common}}}
    for info in sorted(get_steps(), key=lambda s: s.class_alias or ""):
        alias = info.class_alias or ""
        if not alias.startswith("calwebb_"):
            continue
        module, _, name = info.class_name.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        if issubclass(cls, Pipeline):
            steps = {step: spec_of(sc) for step, sc in sorted(cls.step_defs.items())}
            single = None
        else:
            single = cls.__name__.removesuffix("Step")
            single = "".join("_" + c.lower() if c.isupper() else c for c in single).lstrip("_")
            steps = {single: spec_of(cls)}
        found[alias] = {"class": info.class_name, "single_step": single, "steps": steps}
    return found


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    made = from_installed_jwst()
    if "--write" in sys.argv:
        CATALOG_FILE.write_text(json.dumps(made, indent=1, sort_keys=True) + "\n")
        print(f"wrote {CATALOG_FILE} ({len(made)} pipelines)")
    else:
        print(json.dumps(made, indent=1, sort_keys=True))
