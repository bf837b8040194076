"""The planner's decisions on a recorded synthetic stream are the ones a
plain reading of jwst's rules gives, through the fast record path.

The stream is bench/bench_planner.py's (NIRCam imaging, visits of 20
exposures, a visit's detector1 events then its stage-2 events), two
programs, one exposure with PLANNED pointing, every record delivered twice,
then a late exposure that supersedes a mosaic. ``expected`` works the
decisions out from the stream's definition alone, as the planner before the
fast paths made them (the same orders, holds and versions; checked against
that code when this test was written): each imaging science exposure's
level-2 order (the science alone, identified by its rate file's digest), a
hold for the PLANNED one and no order for it, one mosaic per observation once
time has passed (no mosaic while a member is held), and version 2 of a mosaic
when a late member comes. Emission times and the bench's own ids aside, every
field of every order is compared.

Every record also goes the reference way in (contract.decode with the
reference validator, the trust checks, the event-id check from the
reference digest text), which must accept the same records as the same
events.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from calstream.daemon.deciders.event_checks import EventIds, product_event_problems
from calstream.daemon.deciders.level3_orders import order_work_id
from calstream.daemon.deciders.planner_records import check_emitted
from calstream.topics import contract

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_planner as bench  # noqa: E402

PLANNED_EXPOSURE = ("00002", 7)  # program, exposure number: held, never ordered
SIZES = {"00001": 45, "00002": 30}  # exposures: three and two visits, the last partial


def _stream() -> list[bytes]:
    records: list[bytes] = []
    for program, size in SIZES.items():
        for raw in bench.program_records(int(program), size, bench.T0 + int(program) * 1000):
            body = json.loads(raw)
            if (body["program"], int(body["header"]["EXPOSURE"])) == PLANNED_EXPOSURE:
                body["header"]["ENGQLPTG"] = body["pointing_quality"] = "PLANNED"
                raw = json.dumps(body, separators=(",", ":")).encode()
            records.append(raw)
    return records


def _late() -> list[bytes]:
    """A fourth visit of one exposure in program 1's observation, after its mosaic was made."""
    header = bench.synthetic_header(
        "NIRCAM", "NRC_IMAGE", PROGRAM="00001", OBSERVTN="001", VISIT="004",
        EXPOSURE="00001", NEXPOSUR=1, SUBARRAY="SUB160P")
    return [bench._product(stage, header, bench.T0 + 50_000 + n)
            for n, stage in enumerate(("detector1", "stage2"))]


def _reference_take(raw: bytes, ids: EventIds) -> contract.Message:
    body = json.loads(raw)
    contract._validator("product").validate(body)
    assert not product_event_problems(body, products_root=bench.PRODUCTS,
                                      input_roots=bench.ROOTS)
    digest = hashlib.blake2b(json.dumps({k: v for k, v in body.items() if k not in (
        "emitted_at", "producer", "previews")}, sort_keys=True, separators=(",", ":")).encode(),
        digest_size=16).digest()
    assert ids.consistent_digest(body["event_id"], digest)
    return contract.Message("product", body)


def _play() -> list:
    path, reference_ids = bench.RecordPath(), EventIds()
    emitted = []

    def feed(records):
        for raw in records:
            event, problems = path.intake.take(raw, path.event_ids)
            assert problems == []
            assert event.body == _reference_take(raw, reference_ids).body
            emitted.extend(path.state.observe(
                event, contract.parse_time(event["emitted_at"]).timestamp()))

    records = _stream()
    feed(records)
    feed(records)  # redelivered: nothing new
    emitted += path.state.tick(bench.T0 + 20_000)
    feed(_late())
    emitted += path.state.tick(bench.T0 + 80_000)
    return emitted


def _files(records: list[bytes], suffix: str) -> dict[str, dict]:
    out = {}
    for raw in records:
        body = json.loads(raw)
        for o in body["outputs"]:
            if o["suffix"] == suffix:
                out[body["exposure_id"]] = o
    return out


def expected() -> list[tuple]:
    """(topic, key, what the message says) of every decision, in order."""
    records, late = _stream(), _late()
    rates, cals = _files(records + late, "rate"), _files(records + late, "cal")
    decisions = []
    for raw in records + [b"tick"] + late:
        if raw == b"tick":  # time passes: the mosaics of the complete observations
            decisions += _mosaics(records, cals, version=1)
            continue
        body = json.loads(raw)
        if body["stage"] != "detector1":
            continue
        eid = body["exposure_id"]
        if body["pointing_quality"] == "PLANNED":
            decisions.append(("holds", eid, {"state": "held", "digest": body["inputs"][0]["digest"]}))
            continue
        rate = rates[eid]
        wid = contract.event_id("work_order", "calwebb_image2", [("science", rate["digest"])])
        decisions.append(("work.stage2", eid, {
            "work_id": wid, "event_id": contract.event_id("work_order", wid),
            "inputs": [{"path": rate["path"], "digest": rate["digest"], "size": 10,
                        "role": "science"}],
            "members": [(rate["path"], "science")], "degraded": None}))
    return decisions + _mosaics(records + late, cals, version=2, only=late)


def _mosaics(records, cals, *, version, only=None) -> list[tuple]:
    """Each observation's mosaic: all its calibrated members, unless one is held."""
    by_observation: dict[tuple[str, str], list[str]] = {}
    held = set()
    for raw in records:
        body = json.loads(raw)
        by_observation.setdefault((body["program"], body["observation"]), []).append(
            body["exposure_id"])
        if body["pointing_quality"] == "PLANNED":
            held.add((body["program"], body["observation"]))
    out = []
    for (program, observation), members in sorted(by_observation.items()):
        if (program, observation) in held:
            continue
        if only is not None and not any(json.loads(r)["program"] == program for r in only):
            continue
        members = sorted(set(members))
        inputs = [{"path": cals[m]["path"], "digest": cals[m]["digest"], "size": 10,
                   "role": "science"} for m in members]
        inputs.sort(key=lambda i: i["path"])
        wid = order_work_id("calwebb_image3", "live", inputs)
        out.append(("work.stage3", None, {
            "work_id": wid, "event_id": contract.event_id("work_order", wid),
            "inputs": inputs, "members": [(i["path"], "science") for i in inputs],
            "version": version, "member_ids": members, "degraded": None}))
    return out


def _said(emit) -> tuple:
    m = emit.message
    if emit.topic == "holds":
        return ("holds", emit.key, {"state": m["state"], "digest": m["digest"]})
    said = {"work_id": m["work_id"], "event_id": m.event_id, "inputs": m["inputs"],
            "members": [(x["expname"], x["exptype"])
                        for p in m["association"]["products"] for x in p["members"]],
            "degraded": m["degraded"]}
    if emit.topic == "work.stage3":
        said.update(version=m["version"], member_ids=m["members"])
        return ("work.stage3", None, said)
    return (emit.topic, emit.key, said)


def test_the_decisions_on_a_recorded_stream_are_the_reference_decisions():
    emitted = _play()
    decisions = expected()
    assert [_said(e) for e in emitted] == decisions
    kinds = [(topic, said.get("version")) for topic, _, said in decisions]
    assert kinds.count(("work.stage2", None)) == 74 and kinds.count(("holds", None)) == 2
    assert [k for k in kinds if k[0] == "work.stage3"] == [("work.stage3", 1)] + [
        ("work.stage3", 2)]  # program 2's observation waits for its held exposures


def test_a_large_sample_of_the_planners_own_orders_follows_the_contract():
    """The orders are built unchecked on the planner's path; here each one is
    checked: the message schema with the reference validator, and jwst's
    association rules (check_emitted)."""
    emitted = _play()
    path = bench.RecordPath()
    for raw in bench.program_records(3, 400):
        event, _ = path.intake.take(raw, path.event_ids)
        emitted += path.state.observe(event, contract.parse_time(event["emitted_at"]).timestamp())
    emitted += path.state.tick(bench.T0 + 10**6)
    assert len(emitted) > 450
    check_emitted(emitted)
    for e in emitted:
        assert not list(contract._validator(e.message.type).iter_errors(e.message.body))
