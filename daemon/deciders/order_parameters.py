"""A work order's ``parameters``: the configured step parameters and the planner's own.

One place builds them for every stage's orders (planner_state: stage 2,
level3_state: stage 3). ``steps`` is what the configuration sets for the
order's pipeline, EXP_TYPE (its science's) and program
(`steps.step_parameters`); absent when nothing is set, so the pipeline's
defaults and its CRDS parameter reference files decide. The runner passes
``steps`` to the pipeline, and the whole ``parameters`` are part of the
run's work id (steps/provenance.py) and go into its product event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calstream.steps.step_parameters import StepParameters


def order_parameters(configured: StepParameters | None, pipeline: str, *,
                     science: Mapping[str, Any], program: str, **planner: Any) -> dict[str, Any]:
    """``{"steps": ..., **planner}`` for an order whose science exposure's
    product event is ``science``, leaving out what is empty (pointing
    corrections, an operator's annotation, ...), so an order with nothing
    configured carries what it always did."""
    out = {k: v for k, v in planner.items() if v}
    if configured is None or not (configured.steps or configured.by_exp_type
                                  or configured.by_program):
        return out  # nothing configured: no "steps" (for_run would give {})
    exp_type = science.get("exp_type") or (science.get("header") or {}).get("EXP_TYPE")
    steps = configured.for_run(pipeline, exp_type=exp_type,
                                                      program=program)
    if steps:
        out["steps"] = steps
    return out
