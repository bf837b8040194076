"""What to run for an admitted record: the work item (pure).

The same WorkItem for every stage: the runner (doers/work_item_runner.py)
checks the product store, runs ``task`` in a warm worker, and publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.namespaces import LIVE
from calstream.daemon.deciders.pointing_gate import is_planned
from calstream.steps.naming import parse_exposure_name
from calstream.steps.routing import level1_pipeline
from calstream.steps.routing_terms import PIPELINE_CLASSES
from calstream.steps.step_parameters import StepParameters
from calstream.topics.dead_letters import order_identity

DETECTOR1_PIPELINE = "calwebb_detector1"


@dataclass
class WorkItem:
    stage: str  # "detector1" | "dark" | "guider" | "stage2" | "stage3"
    pipeline: str  # e.g. "calwebb_detector1"
    task: str  # "module:function" run in a worker, called with output_dir=...
    task_kwargs: dict[str, Any]
    program: str
    observation: str
    name: str  # product name: the exposure id for stages 1-2, the level-3 name for stage 3
    inputs: list[dict[str, Any]]  # {path, digest, size, role}
    parameters: dict[str, Any] = field(default_factory=dict)
    event_fields: dict[str, Any] = field(default_factory=dict)  # extra product-event fields
    arrived_at: str | None = None  # start of end-to-end latency
    key: str = ""  # message key, for dead letters
    record: Any = None  # the broker record it came from, for dead letters
    # A replayed item's own context and output tree; None/"live": the daemon's.
    crds_context: str | None = None
    namespace: str = LIVE
    priority: str = "live"  # "replay" waits behind every live item for a worker
    replay: dict[str, Any] | None = None  # the replay that asked for it, carried to the product
    version: int = 1  # >1: a stage-3 product superseding the previous version
    # Set by the runner once it knows it (it depends on the daemon's CRDS
    # context): every log line about the run then names the work.
    work_id: str | None = None
    # A work order's identity, as its dead letter keeps it beside the cut
    # original (topics/dead_letters.order_identity); None for an arrival.
    order: dict[str, str] | None = None

    @property
    def fault_family(self) -> tuple[str | None, ...]:
        """The work an infrastructure fault met by this item would meet alike
        (a reference missing for a mode, from one CRDS context; a full disk
        meets every family): parked items of one family take turns at trying
        again (doers/park_gates.py)."""
        fields = self.event_fields
        return (self.stage, self.pipeline, _text(fields.get("instrument")),
                _text(fields.get("exp_type")), self.crds_context, self.namespace)

    @property
    def log_context(self) -> dict[str, str | None]:
        return {"exposure_id": self.event_fields.get("exposure_id") or self.name,
                "stage": self.stage, "work_id": self.work_id}


def _text(value: Any) -> str | None:
    return value if value is None or type(value) is str else repr(value)


def pipeline_of(stage: str, message: dict | None) -> str:
    """The pipeline a stage's message asks for ("unknown" for an undecodable
    one, or one that names no pipeline of jwst's). A metric's label: a
    forged work order's own text there was a new series per record, of up to
    a megabyte each, kept for the daemon's life."""
    if stage == "detector1":
        return level1_pipeline(message["header"]) if message else DETECTOR1_PIPELINE
    asked = message.get("pipeline") if message else None
    return asked if type(asked) is str and asked in PIPELINE_CLASSES else "unknown"


def detector1_steps(configured: StepParameters, arrival: dict,
                    pipeline: str = DETECTOR1_PIPELINE) -> dict[str, Any]:
    """The step parameters configured for the arrival's run of ``pipeline``
    (detector1, or calwebb_dark / calwebb_guider where its route says;
    ``{}``: jwst's defaults and the CRDS parameter reference files)."""
    return configured.for_run(pipeline, exp_type=arrival["header"].get("EXP_TYPE"),
                              program=parse_exposure_name(arrival["exposure_id"]).program)


def detector1_item(arrival: dict, *, task: str, steps: dict[str, Any], key: str,
                   record: Any, pipelines: dict[str, str] | None = None,
                   other_steps: Callable[[str], dict[str, Any]] | None = None,
                   input_signature: list[int] | None = None) -> WorkItem:
    """The run of an arrival: calwebb_detector1, or the pipeline its route
    runs instead (calwebb_dark, calwebb_guider) when ``pipelines`` (the
    stage's {pipeline: product stage}) has it. ``steps`` are detector1's;
    ``other_steps(pipeline)`` gives the configured ones of the others.
    The worker calibrates the file only while it holds the arrival's digest
    (``input_signature``: the stat signature the admission read it under,
    which spares the worker a second read; steps/admitted_input.py)."""
    name = parse_exposure_name(arrival["exposure_id"])
    header = arrival["header"]
    quality = str(header.get("ENGQLPTG", "UNKNOWN"))
    replay = arrival.get("replay") or None
    pipeline = level1_pipeline(header)
    if pipeline not in (pipelines or {}):
        pipeline = DETECTOR1_PIPELINE
    stage = (pipelines or {}).get(pipeline, "detector1")
    detector1 = pipeline == DETECTOR1_PIPELINE
    # detector1's settings are detector1's: another pipeline gets its own.
    run_steps = steps if detector1 else (other_steps(pipeline) if other_steps else {})
    kwargs = {"input_path": arrival["path"], "steps": run_steps,
              "input_digest": arrival["digest"], "input_signature": input_signature}
    if not detector1:
        kwargs["pipeline"] = pipeline
    return WorkItem(
        stage=stage, pipeline=pipeline, task=task, task_kwargs=kwargs,
        program=name.program, observation=name.observation, name=arrival["exposure_id"],
        inputs=[{"path": arrival["path"], "digest": arrival["digest"],
                 "size": arrival["size"], "role": "uncal"}],
        parameters={"steps": run_steps},
        event_fields=dict(
            exposure_id=arrival["exposure_id"], visit=name.visit,
            instrument=header.get("INSTRUME"), exp_type=header.get("EXP_TYPE"),
            header=header, pointing_quality=quality,
            # Only detector1 products wait for a pointing correction: calwebb_dark
            # and calwebb_guider use no pointing and feed no stage 2.
            pointing_provisional=detector1 and is_planned(quality)),
        arrived_at=arrival["detected_at"], key=key, record=record,
        crds_context=(replay or {}).get("crds_context"),
        namespace=(replay or {}).get("namespace") or LIVE,
        priority="replay" if replay or arrival.get("priority") == "replay" else "live",
        replay=replay)


def work_order_item(order: dict, *, stage: str, task: str, key: str, record: Any,
                    steps: dict[str, Any],
                    signatures: dict[str, list[int] | None] | None = None) -> WorkItem:
    """``steps``: the step parameters this daemon's configuration gives the
    order (order_parameters.run_steps), which the run takes, not the order's copy.
    ``signatures``: each input path's stat signature under which the
    admission read its digest (digest_memo.signature_of); the worker checks
    its inputs by them before and after the run (admitted_input.check_order_inputs)."""
    asn = order["association"]
    members = sorted((m["exptype"], Path(m["expname"]).name)
                     for p in asn.get("products", []) for m in p.get("members", []))
    fields = {k: order[k] for k in ("exposure_id", "visit", "instrument", "exp_type",
                                    "header", "pointing_quality", "pointing_provisional",
                                    "releases", "degraded")
              if order.get(k) is not None}
    parameters = {k: v for k, v in (order.get("parameters") or {}).items() if k != "steps"}
    if steps:  # absent when nothing is configured, as the planner writes it
        parameters["steps"] = steps
    fields["association"] = {"asn_id": asn.get("asn_id"), "asn_rule": asn.get("asn_rule"),
                             "degraded_status": asn.get("degraded_status"),
                             "members": [{"exptype": e, "expname": n} for e, n in members]}
    return WorkItem(
        stage=stage, pipeline=order["pipeline"], task=task,
        task_kwargs={"pipeline": order["pipeline"], "association": asn,
                     "asn_filename": order.get("association_path") or
                     f"{order['product_name']}_{stage}_asn.json",
                     "steps": steps,
                     "corrections": parameters.get("pointing_corrections"),
                     "annotation": parameters.get("annotation"),
                     "admitted": [{"path": i["path"], "digest": i["digest"],
                                   "signature": (signatures or {}).get(i["path"])}
                                  for i in order.get("inputs", [])]},
        program=order["program"], observation=order.get("observation") or "000",
        name=order["product_name"], inputs=order.get("inputs", []),
        parameters={**parameters, "members": members},
        event_fields=fields, arrived_at=order.get("arrived_at"), key=key, record=record,
        crds_context=order.get("crds_context") or (order.get("replay") or {}).get("crds_context"),
        namespace=order.get("namespace") or LIVE,
        priority="replay" if order.get("priority") == "replay" or order.get("replay")
        else "live",
        replay=order.get("replay") or None,
        version=int(order.get("version") or 1), order=order_identity(order))
