"""A recorded planner input stream: several programs, holds, releases, a
late exposure that supersedes a mosaic, a plan, ticks (pure, no broker).

``steps()`` is the stream; ``play`` feeds steps to a PlannerState and
returns what it emitted. Tests use it to check every message the planner
makes (test_planner_outputs.py) and that a restored snapshot decides as the
full rebuild does (test_planner_snapshot.py).
"""

from __future__ import annotations

import json
from typing import Any

from calstream.daemon.deciders.planner_records import Emit
from calstream.daemon.deciders.planner_state import PlannerState, observe_pointing_everywhere
from calstream.steps.plans import parse_manifest
from calstream.steps.synthetic.headers import exposure_id, synthetic_header
from calstream.topics import contract

from .test_level3_state import _event

T0 = 1_800_000_000.0
SETTINGS = {"companion_wait": 60.0, "level3_settle": 30.0, "level3_quiet_period": 600.0,
            "level3_stage2_wait": 1200.0}
CORRECT = {"ENGQLPTG": "CALCULATED_TRACK_TR_202111", "RA_V1": 80.4, "DEC_V1": -69.4,
           "PA_V3": 110.0, "RA_REF": 80.5, "DEC_REF": -69.5, "ROLL_REF": 109.5}


def product(stage: str, header: dict, at: float, variant: str = "") -> contract.Message:
    suffixes = ("rate", "rateints") if stage == "detector1" else ("cal", "i2d")
    return _event(stage, header, suffixes, at=at, variant=variant)


def image(program: str, n: int, nexp: int = 4, **kw) -> dict:
    return synthetic_header("NIRCAM", "NRC_IMAGE", PROGRAM=program, EXPOSURE=f"{n:05d}",
                            NEXPOSUR=nexp, SUBARRAY="SUB160P", **kw)


def pointing(exposure: str, action: str, at: float) -> contract.Message:
    fields: dict[str, Any] = ({"keywords": CORRECT} if action == "correct" else
                              {"reason": "telemetry lost; WCS checked by hand", "by": "ops"})
    return contract.build("pointing_update",
                          contract.event_id("pu", exposure, action, json.dumps(fields)),
                          exposure_id=exposure, action=action, emitted_at=contract.iso(at),
                          **fields)


def steps(*, dead_letters: bool = False) -> list[tuple[str, Any, float]]:
    """(kind, payload, now): kind is product, pointing, plan or tick; with
    ``dead_letters`` also stage2_failed (a dead letter of the exposure's
    stage-2 order, as the planner reads it), which only ``play`` knows."""
    out: list[tuple[str, Any, float]] = []
    at = T0
    # Program 1: a dithered visit, one dither held then corrected, one held and
    # released by an operator; then a late, redelivered fifth dither.
    for n in range(1, 5):
        at += 10
        quality = "PLANNED" if n in (2, 3) else "CALCULATED_TRACK_TR_202111"
        h = image("01001", n, ENGQLPTG=quality)
        out.append(("product", product("detector1", h, at), at))
        if quality != "PLANNED":
            out.append(("product", product("stage2", h, at + 1), at + 1))
    at += 5
    out.append(("pointing", pointing(exposure_id(image("01001", 2)), "correct", at), at))
    out.append(("pointing", pointing(exposure_id(image("01001", 3)), "release", at + 1), at + 1))
    for n in (2, 3):
        h = image("01001", n, ENGQLPTG="PLANNED")
        out.append(("product", product("stage2", h, at + 2), at + 2))
    out.append(("tick", None, at + 100))  # settles: mosaic version 1
    late = image("01001", 5, nexp=5)
    out.append(("product", product("detector1", late, at + 110), at + 110))
    out.append(("product", product("detector1", late, at + 111), at + 111))  # redelivered
    out.append(("product", product("stage2", late, at + 112), at + 112))
    out.append(("tick", None, at + 200))  # version 2 supersedes version 1
    # Program 2: a plan of three exposures, the last one late.
    at += 300
    headers = [image("02002", n, nexp=3) for n in (1, 2, 3)]
    plan = parse_manifest(json.dumps({"exposures": [
        {"exposure_id": exposure_id(h), "candidates": ["o001"],
         "header": {k: h[k] for k in ("INSTRUME", "EXP_TYPE", "FILTER", "PUPIL", "SUBARRAY",
                                      "TARGETID", "NEXPOSUR")}} for h in headers]}),
        source="m.json")
    out.append(("plan", plan, at))
    for i, h in enumerate(headers[:2]):
        out.append(("product", product("detector1", h, at + i), at + i))
        out.append(("product", product("stage2", h, at + i + 0.5), at + i + 0.5))
    out.append(("tick", None, at + 50))
    # Program 3: an exposure redelivered with new content (a new digest).
    h = image("03003", 1, nexp=2)
    out.append(("product", product("detector1", h, at + 60), at + 60))
    out.append(("product", product("detector1", h, at + 61, variant="again"), at + 61))
    out.append(("product", product("detector1", headers[2], at + 70), at + 70))
    out.append(("product", product("stage2", headers[2], at + 71), at + 71))
    # Program 4: an exposure whose stage-2 order is dead-lettered: not in
    # flight, so its candidate is abandoned after the quiet period, not
    # level3_stage2_wait.
    if dead_letters:
        failing = image("04004", 1, nexp=1)
        out.append(("product", product("detector1", failing, at + 80), at + 80))
        out.append(("stage2_failed", exposure_id(failing), at + 90))
        # Redriven (its letter put back with a redrive mark): in flight again,
        # until the redriven record's own dead letter comes.
        out.append(("stage2_letter", (exposure_id(failing), "letter-1", ("mark-1",)), at + 92))
        out.append(("stage2_letter", (exposure_id(failing), "letter-2", ()), at + 95))
    out.append(("tick", None, at + 2000))  # quiet periods over: degraded closes
    # Program 3's exposure was ordered but its stage 2 never came: past
    # level3_stage2_wait its candidate is abandoned (nothing to make), and
    # its stage-2 product, late, re-opens it: closed degraded (1 of 2).
    out.append(("product", product("stage2", h, at + 2100), at + 2100))
    out.append(("tick", None, at + 2100 + 1200))
    return out


def play(state: PlannerState, stream) -> list[Emit]:
    emitted: list[Emit] = []
    for kind, payload, now in stream:
        if kind == "product":
            emitted += state.observe(payload, now)
        elif kind == "pointing":
            emitted += observe_pointing_everywhere([state], payload, now)
        elif kind == "plan":
            emitted += state.load_plan(payload, now)
        elif kind == "stage2_failed":
            work_id = next(w for w, e in state.ordered.items() if e == payload)
            emitted += state.observe_stage2_failure(work_id, payload, "calwebb_spec2 failed: boom",
                                                    now, failure_key="letter-1")
        elif kind == "stage2_letter":
            exposure, letter, marks = payload
            work_id = next(w for w, e in state.ordered.items() if e == exposure)
            emitted += state.observe_stage2_failure(work_id, exposure, "calwebb_spec2 failed: boom",
                                                    now, failure_key=letter, redrives=marks)
        else:
            emitted += state.tick(now)
    return emitted


def new_state() -> PlannerState:
    return PlannerState(**SETTINGS)


def comparable(emits: list[Emit]) -> list[tuple[str, str, str]]:
    """What was emitted, without emission times: (topic, key, body as JSON)."""
    return [(e.topic, e.key, json.dumps({k: v for k, v in e.message.body.items()
                                         if k != "emitted_at"}, sort_keys=True))
            for e in emits]
