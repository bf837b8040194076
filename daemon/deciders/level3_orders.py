"""A stage-3 work order, as pure logic: its identity and its message.

Kept apart from ``level3_state`` (which decides *when* a candidate closes):
this is *what* the order says once it does.
"""

from __future__ import annotations

from typing import Any

from calstream.daemon.deciders.level3_candidates import Candidate, Sent
from calstream.daemon.deciders.order_parameters import order_parameters
from calstream.steps.associations import Exposure, association_filename
from calstream.steps.naming import parse_exposure_name
from calstream.steps.step_parameters import StepParameters
from calstream.topics import contract


def order_work_id(pipeline: str, namespace: str, inputs: list[dict[str, Any]]) -> str:
    """A stage-3 order's identity: its pipeline, namespace and inputs (role,
    digest). A product event carries the same inputs, so it names its order."""
    return contract.event_id("work_order", "stage3", pipeline, namespace,
                             sorted((i.get("role"), i["digest"]) for i in inputs))


def previous_versions(sent: list[Sent], restored: list[dict[str, Any]]) -> list[Sent]:
    """The versions a candidate's orders had: sent here, and restored (work
    topics, product store) from before a restart, by version."""
    known = {s.work_id for s in sent}
    return sorted([*sent, *(Sent(o.get("version") or 1, o["work_id"], (), o.get("degraded"))
                            for o in restored if o["work_id"] not in known)],
                  key=lambda s: s.version)


def stage3_order(cand: Candidate, asn: dict[str, Any], ready: list[Exposure],
                 events: list[dict[str, Any]], *, inputs: list[dict[str, Any]],
                 work_id: str, version: int,
                 degraded: str | None, namespace: str,
                 step_parameters: StepParameters | None) -> contract.Message:
    """The work order closing ``cand``: ``ready`` are its calibrated members
    and ``events`` their stage-2 product events, in the same order; ``inputs``
    the association's files with their digests (the order's identity)."""
    science = next((ev for e, ev in zip(ready, events, strict=True)
                    if e.route is not None and e.route.role == "science"), events[0])
    releases = {k: v for ev in events for k, v in (ev.get("releases") or {}).items() if v}
    arrivals = [ev.get("arrived_at") for ev in events if ev.get("arrived_at")]
    # Not validated here (tests/unit/test_planner_outputs.py validates what
    # the deciders make; the publisher's encoding checks the schema).
    return contract.assemble(
        "work_order", contract.event_id("work_order", work_id),
        work_id=work_id, stage="stage3", pipeline=cand.route.stage3,
        product_name=asn["products"][0]["name"], program=cand.key.program,
        observation=parse_exposure_name(science["exposure_id"]).observation,
        association=asn, association_path=association_filename(asn), inputs=inputs,
        crds_context=None, priority="live", namespace=namespace,
        parameters=order_parameters(step_parameters, cand.route.stage3,
                                    science=science, program=cand.key.program),
        releases=releases or None, degraded=degraded,
        version=version, candidate=cand.key.acid, expected_by=cand.expected_by,
        members=sorted(e.exposure_id for e in ready),
        instrument=science.get("instrument"), exp_type=science.get("exp_type"),
        header=science.get("header"), pointing_quality=science.get("pointing_quality"),
        pointing_provisional=False,
        # Latency of a combined product runs from its last member's arrival.
        # (the last in time, not as text: any offset is the contract's).
        arrived_at=max(arrivals, key=contract.parse_time) if arrivals else None)
