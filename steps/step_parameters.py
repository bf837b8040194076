"""Step parameters an operator sets, the way strun's ``--steps.<step>.<arg>`` does.

jwst decides a run's parameters in layers: each step's defaults, then the
CRDS parameter reference files (``pars-<step>``, chosen by the exposure's
header), then what the caller passes. calstream passes only what the
configuration says, so the CRDS files apply wherever nobody configured
otherwise. The configuration has three tables of the same shape,
``{pipeline: {step: {parameter: value}}}``, applied in this order, the
narrower one winning parameter by parameter:

* ``steps``: every exposure;
* ``steps_by_exp_type``: ``{EXP_TYPE: {pipeline: ...}}``, exposures of that
  type (a level-3 product: its science's);
* ``steps_by_program``: ``{program: {pipeline: ...}}``, one program's.

Each table is checked when the configuration loads, against the pipelines'
own step and parameter specs (`pipeline_catalog`): an unknown pipeline,
step, parameter, EXP_TYPE or program, a value of the wrong type, is a
configuration error naming it, never a dead letter per exposure later.

A few parameters every step has are calstream's, not the configuration's
(`OWNED_BY_CALSTREAM`): where a run reads and writes and what its files are
called (a product written elsewhere, or named with a "/", would never reach
the product store, which seals and publishes the run's own directory), and
stpipe's hooks, which run any command or function after a step. The same
check refuses them in a work order (deciders/order_parameters.py), where a
forged one made a worker run a shell command.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from calstream.steps.pipeline_catalog import catalog, common_parameters, parameter_spec
from calstream.steps.routing_terms import INSTRUMENT_OF

__all__ = ["OWNED_BY_CALSTREAM", "StepParameters", "merge_steps", "parse_by_exp_type",
           "parse_by_program", "parse_pipeline_steps"]

Steps = dict[str, dict[str, Any]]
_PROGRAM = re.compile(r"^[0-9]{5}$")

OWNED_BY_CALSTREAM = frozenset({"input_dir", "output_dir", "output_file", "output_ext", "suffix",
                                "pre_hooks", "post_hooks"})


def merge_steps(base: Mapping[str, Mapping[str, Any]] | None,
                over: Mapping[str, Mapping[str, Any]] | None) -> Steps:
    """``base`` overridden step by step, parameter by parameter, by ``over``."""
    merged = {name: dict(pars) for name, pars in (base or {}).items()}
    for name, pars in (over or {}).items():
        merged[name] = {**merged.get(name, {}), **pars}
    return merged


def _hint(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _spec_call(spec: str) -> tuple[str, list[Any]]:
    """A configobj spec, ``option('a', 'b', default='a')`` -> ("option", ["a", "b"])."""
    try:
        node = ast.parse(spec.strip().rstrip(","), mode="eval").body
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id, [ast.literal_eval(a) for a in node.args]
    except (SyntaxError, ValueError):
        pass
    return spec.split("(", 1)[0].strip(), []


def _check_value(value: Any, spec: str) -> None:
    kind, args = _spec_call(spec)
    scalar = (str, int, float, bool)
    if kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "string":
        ok = isinstance(value, str)
    elif kind == "option":
        ok = value in args and not isinstance(value, bool)
    elif kind.endswith("list"):
        ok = isinstance(value, list) and all(isinstance(v, scalar) for v in value)
    else:  # stpipe's own checks (is_string_or_datamodel, ...): a plain value
        ok = isinstance(value, scalar) or (isinstance(value, list)
                                           and all(isinstance(v, scalar) for v in value))
    if not ok:
        raise ValueError(f"{value!r} does not fit the parameter's spec {spec}")


def parse_pipeline_steps(value: Any, where: str = "steps") -> Steps:
    """``{pipeline: {step: {parameter: value}}}``, checked against the catalogue."""
    known = catalog()
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a table of pipelines such as "
                         f"[{where}.calwebb_image3.tweakreg], got {value!r}")
    checked: Steps = {}
    for pipeline, steps in value.items():
        if pipeline not in known:
            raise ValueError(f"{where}: unknown pipeline {pipeline!r}{_hint(pipeline, known)}; "
                             f"known: {', '.join(known)}")
        if not isinstance(steps, Mapping):
            raise ValueError(f"{where}.{pipeline}: expected a table of steps, got {steps!r}")
        specs = known[pipeline]["steps"]
        for step, pars in steps.items():
            at = f"{where}.{pipeline}.{step}"
            if step not in specs:
                raise ValueError(f"{where}.{pipeline}: {pipeline} has no step {step!r}"
                                 f"{_hint(step, specs)}; its steps: {', '.join(specs)}")
            if not isinstance(pars, Mapping):
                raise ValueError(f"{where}.{pipeline}: step {step!r}: expected a table of "
                                 f"parameters, got {pars!r}")
            for name, par in pars.items():
                if name in ("pre_hooks", "post_hooks"):
                    raise ValueError(f"{at}.{name}: calstream runs no hooks (stpipe runs "
                                     "the command or function a hook names)")
                if name in OWNED_BY_CALSTREAM:
                    raise ValueError(f"{at}.{name}: calstream sets where a run reads and "
                                     "writes and what its files are called (a product "
                                     "made elsewhere would bypass the product store)")
                spec = parameter_spec(pipeline, step, name)
                if spec is None:
                    names = {**common_parameters(), **specs[step]}
                    raise ValueError(f"{at}: {step} has no parameter {name!r}"
                                     f"{_hint(name, names)}")
                try:
                    _check_value(par, spec)
                except ValueError as exc:
                    raise ValueError(f"{at}.{name}: {exc}") from None
            checked.setdefault(pipeline, {})[step] = dict(pars)
    return checked


def _parse_keyed(value: Any, where: str, check_key) -> dict[str, Steps]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a table, got {value!r}")
    out = {}
    for key, table in value.items():
        check_key(str(key))
        out[str(key)] = parse_pipeline_steps(table, f"{where}.{key}")
    return out


def parse_by_exp_type(value: Any) -> dict[str, Steps]:
    def check(exp_type: str) -> None:
        if exp_type not in INSTRUMENT_OF:
            raise ValueError(f"steps_by_exp_type: unknown EXP_TYPE {exp_type!r}"
                             f"{_hint(exp_type, INSTRUMENT_OF)}")
    return _parse_keyed(value, "steps_by_exp_type", check)


def parse_by_program(value: Any) -> dict[str, Steps]:
    def check(program: str) -> None:
        if not _PROGRAM.match(program):
            raise ValueError(f"steps_by_program: {program!r} is not a program number "
                             "(five digits, quoted in TOML: \"01234\")")
    return _parse_keyed(value, "steps_by_program", check)


@dataclass(frozen=True)
class StepParameters:
    """The configured step parameters; `for_run` gives one run's."""

    steps: Steps = field(default_factory=dict)
    by_exp_type: dict[str, Steps] = field(default_factory=dict)
    by_program: dict[str, Steps] = field(default_factory=dict)

    def for_run(self, pipeline: str, *, exp_type: str | None = None,
                program: str | None = None) -> Steps:
        """What to pass as ``steps`` to ``pipeline`` for one exposure or product
        (``{}``: the pipeline's defaults and its CRDS parameter files)."""
        merged = merge_steps(self.steps.get(pipeline), None)
        for layer in (self.by_exp_type.get(exp_type or ""), self.by_program.get(program or "")):
            merged = merge_steps(merged, (layer or {}).get(pipeline))
        return {step: pars for step, pars in merged.items() if pars}
