"""A stage-2 work order, as pure logic: its identity and its message.

Kept apart from ``planner_state`` (which decides *when* a level-2
association is complete enough to order): this is *what* the order says
once it is, and the id that says whether it was already sent. The stage-3
counterpart is ``level3_orders``.
"""

from __future__ import annotations

from calstream.daemon.deciders.holds import release_notes
from calstream.daemon.deciders.order_parameters import order_parameters
from calstream.daemon.deciders.planner_records import Candidate, Seen
from calstream.steps.associations import association_filename, companion_kind
from calstream.steps.step_parameters import StepParameters
from calstream.topics import contract


def members_of(cand: Candidate, sci: Seen, pool: list) -> list[Seen]:
    """The association's exposures: its science and the companions it takes."""
    return [sci] + [s for s in pool if isinstance(s, Seen)
                    and companion_kind(cand.route, sci.exposure, s.exposure)]


def order_identity(cand: Candidate, asn: dict, members: list[Seen], pool: list,
                   namespace: str) -> tuple[str, list, dict]:
    """(work id, inputs, member paths): what says whether this order was sent."""
    paths = {m["expname"]: m["exptype"] for p in asn["products"] for m in p["members"]}
    by_path = dict(members[0].outputs) if pool else members[0].outputs  # read only
    for r in pool:
        by_path.update(r.outputs if isinstance(r, Seen) else r[1])
    inputs = [{"path": path, "digest": by_path[path]["digest"],
               "size": by_path[path].get("size", 0), "role": role}
              for path, role in sorted(paths.items()) if path in by_path]
    wid = contract.event_id("work_order", cand.route.stage2,
                            sorted((i["role"], i["digest"]) for i in inputs))
    if namespace != "live":
        wid = contract.event_id("work_order", wid, namespace)
    released = [m for m in members if m.release]
    return _with_releases(wid, released, paths), inputs, paths


def _with_releases(wid: str, members: list[Seen], paths: dict) -> str:
    if not members:
        return wid
    corrections, annotation = release_notes(members, paths)
    if corrections or annotation:
        wid = contract.event_id("work_order", wid, sorted(corrections), annotation)
    return wid


def stage2_order(cand: Candidate, sci: Seen, asn: dict, members: list[Seen], wid: str,
                 inputs: list, paths: dict, *, degraded: bool, namespace: str,
                 step_parameters: StepParameters | None) -> contract.Message:
    """The work order of ``cand``'s association ``asn`` (a live one: the
    planner puts a replay's namespace on it)."""
    name = sci.exposure.name  # cand.science's
    ev = sci.event
    members = [m for m in members if m.release]
    corrections, annotation = release_notes(members, paths) if members else ({}, None)
    releases = {m.exposure.exposure_id: m.release for m in members}
    return contract.assemble(
        "work_order", contract.event_id("work_order", wid),
        work_id=wid, stage="stage2", pipeline=cand.route.stage2,
        product_name=cand.science, program=name.program, observation=name.observation,
        association=asn, association_path=association_filename(asn), inputs=inputs,
        crds_context=None, priority="live", namespace=namespace,
        parameters=order_parameters(step_parameters, cand.route.stage2,
                                    science=ev, program=name.program,
                                    pointing_corrections=corrections, annotation=annotation),
        releases=releases or None,
        degraded=asn["degraded_status"] if degraded else None,
        exposure_id=cand.science, visit=name.visit, instrument=ev.get("instrument"),
        exp_type=ev.get("exp_type"), header=ev.get("header"),
        pointing_quality=(sci.release or {}).get("keywords", {}).get(
            "ENGQLPTG", ev.get("pointing_quality")),
        pointing_provisional=bool(ev.get("pointing_provisional"))
        and (sci.release or {}).get("path") != "pointing",
        arrived_at=ev.get("arrived_at"))
