"""A work order's ``parameters``: the configured step parameters and the planner's own.

One place builds them for every stage's orders (planner_state: stage 2,
level3_state: stage 3), and one place decides which step parameters a
stage runs an order with (`run_steps`). ``steps`` is what the configuration
sets for the order's pipeline, EXP_TYPE (its science's) and program
(`steps.step_parameters`); absent when nothing is set, so the pipeline's
defaults and its CRDS parameter reference files decide. The whole
``parameters`` are part of the run's work id (steps/provenance.py) and go
into its product event.

A work order arrives from a topic, so its ``steps`` are a message's copy:
stpipe would honour a hook there (a shell command run by the worker) or an
``output_dir`` (products written outside the store). The stage therefore
runs an order with the step parameters its own configuration gives that
order, as the file's own header, not an arrival's copy, decides detector1.
An order whose ``steps`` no configuration could give (an unknown step or
parameter, a value of the wrong type, one of calstream's own parameters) is
refused (`steps_problem`); one that merely differs (an order planned under an
earlier configuration, replayed, or planned by a daemon whose configuration
was rolled out first) runs with this daemon's, and the difference is named
(`differing_steps`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from calstream.steps.step_parameters import StepParameters, parse_pipeline_steps

# A refusal quotes the message's own names and values: at most this much of them.
_SHOWN = 300


def order_parameters(configured: StepParameters | None, pipeline: str, *,
                     science: Mapping[str, Any], program: str, **planner: Any) -> dict[str, Any]:
    """``{"steps": ..., **planner}`` for an order whose science exposure's
    product event is ``science``, leaving out what is empty (pointing
    corrections, an operator's annotation, ...), so an order with nothing
    configured carries what it always did."""
    out = {k: v for k, v in planner.items() if v}
    steps = configured_steps(configured, pipeline, exp_type=_exp_type(science), program=program)
    if steps:
        out["steps"] = steps
    return out


def configured_steps(configured: StepParameters | None, pipeline: str, *,
                     exp_type: str | None, program: str | None) -> dict[str, Any]:
    """What the configuration sets for one run of ``pipeline`` (``{}``: nothing)."""
    if configured is None or not (configured.steps or configured.by_exp_type
                                  or configured.by_program):
        return {}
    return configured.for_run(pipeline, exp_type=exp_type, program=program)


def _exp_type(science: Mapping[str, Any]) -> str | None:
    header = science.get("header")
    return science.get("exp_type") or (header.get("EXP_TYPE") if isinstance(header, Mapping)
                                       else None)


def run_steps(configured: StepParameters | None, order: Mapping[str, Any]) -> dict[str, Any]:
    """The step parameters a stage runs ``order`` with: its own configuration's
    for the order's pipeline, EXP_TYPE and program, the way the planner made them."""
    return configured_steps(configured, order["pipeline"], exp_type=_exp_type(order),
                            program=order.get("program"))


def steps_problem(order: Mapping[str, Any]) -> str | None:
    """Why the order's ``parameters.steps`` cannot be step parameters any
    configuration of its pipeline gives (None: they could be)."""
    parameters = order.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, Mapping):
        return "its parameters are not an object"
    steps = parameters.get("steps")
    if not steps:
        return None
    try:
        parse_pipeline_steps({order["pipeline"]: steps}, where="parameters.steps")
    except ValueError as exc:
        return f"step parameters no configuration gives: {str(exc)[:_SHOWN]}"
    return None


def differing_steps(asked: Mapping[str, Any] | None, given: Mapping[str, Any]) -> list[str]:
    """``step.parameter`` for each parameter the order asked for that the run
    is not given as asked (or is given and the order did not ask for)."""
    asked = asked or {}
    names = {(s, p) for table in (asked, given) for s, pars in table.items() for p in pars}

    def value(table: Mapping[str, Any], step: str, name: str) -> bytes | None:
        if name not in table.get(step, {}):
            return None
        return orjson.dumps(table[step][name])  # 1 and 1.0, or 1 and true, are not the same

    return sorted(f"{s}.{p}" for s, p in names if value(asked, s, p) != value(given, s, p))
