"""Forged product events reach no decision they can break.

A products record the intake accepts is decided on for the rest of its
visit's life: routed, counted for completeness, named into associations on
every event and every tick. A mutation fuzz (this file's) found headers
that passed the intake and then raised out of every later tick -- a
TIME-OBS that names nothing, a NEXPOSUR that is a word, an object where a
filter name goes -- and a NEXPOSUR of 10**18 that made completeness list
that many missing exposures until the process was killed for memory. Now
the intake refuses a header no file could have (steps/exposure.py,
header_copy_problems), and a decision that still raises stops only its own
candidate (deciders/bulkhead.py).
"""

from __future__ import annotations

import copy
import json
import logging
import random
import sys
from pathlib import Path

import pytest

from calstream.daemon.deciders.event_checks import EventIds
from calstream.daemon.deciders.planner_state import PlannerState
from calstream.daemon.deciders.product_intake import ProductIntake
from calstream.topics import contract

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_planner as bench  # noqa: E402

# Values a forger (or a broken producer) may put anywhere a message has one.
WEIRD = [None, "", "T", " ", "0", "-1", "PLANNED", "CALCULATED", "N/A", "nan", "1e400",
         0, -1, 1, 2, 1.5, -0.0, 1e308, True, False, [], {}, ["a"], {"a": 1},
         "../x", "/products/../etc", "a" * 300, "\u00e9\u4e2d", "NRC_IMAGE", "NRC_TSIMAGE",
         "NIS_SOSS", "NRC_WFSS", "MIRIMAGE", "NRCA1", "NRCBLONG", "FULL", "SUB160P", "F200W",
         "CLEAR", "GRISMR", "00001", "99999", "001", "jw", "sha256:" + "0" * 64]
HUGE = [10**18, 10**30]  # only where the intake judges them: unjudged, they exhaust memory


def _paths(obj, prefix=()):
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) \
        else ()
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,))


def _mutated(body: dict, rng: random.Random, values: list) -> dict:
    body = copy.deepcopy(body)
    for _ in range(rng.choice([1, 1, 2, 3])):
        path = rng.choice([p for p in _paths(body) if p[0] not in ("schema", "schema_version")])
        parent = body
        for k in path[:-1]:
            parent = parent[k]
        if rng.random() < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(values)
    if rng.random() < 0.4 and isinstance(body.get("header"), dict) and body["header"]:
        body["header"][rng.choice(sorted(body["header"]))] = rng.choice(values)
    return body


def _program() -> list[dict]:
    return [json.loads(r) for r in bench.program_records(1, 6)]  # one visit of six


def _run(bodies: list[dict], *, judged: bool) -> PlannerState:
    """The planner loop's path for each record: the intake, then (when
    ``judged``, only if it found no problem) the decision; then time passes."""
    intake = ProductIntake(products_root=bench.PRODUCTS, input_roots=bench.ROOTS)
    ids, state = EventIds(), PlannerState(**bench.RecordPath.settings())
    t = bench.T0
    for body in bodies:
        t += 1
        try:
            event, problems = intake.take(json.dumps(body).encode(), ids)
        except contract.InvalidMessage:
            continue  # dead-lettered by the loop
        if problems and judged:
            continue  # dead-lettered by the loop
        try:
            state.observe(event, t)
        except Exception:  # noqa: BLE001 - the loop's catch-all dead-letters it
            if judged:
                raise  # an event the intake let through must be decidable
    for later in (t + 700, t + 4000, t + 10**6):
        state.tick(later)  # never raises: no record may stop the planner's clock
    return state


@pytest.mark.parametrize("seed", range(4))
def test_what_the_intake_accepts_the_planner_can_decide(seed):
    rng = random.Random(seed)
    program = _program()
    for _ in range(150):
        target = rng.randrange(len(program))
        bodies = [_mutated(b, rng, WEIRD + HUGE) if i == target else b
                  for i, b in enumerate(program)]
        _run(bodies, judged=True).summary(bench.T0 + 10**6)


@pytest.mark.parametrize("seed", range(2))
def test_a_decision_that_raises_stops_only_its_candidate(seed):
    """The intake bypassed: whatever observe makes of a forged event, the
    ticks after it still decide (the huge counts left out: unjudged, they
    would exhaust the test machine's memory in the status summary)."""
    rng = random.Random(100 + seed)
    program = _program()
    for _ in range(150):
        target = rng.randrange(len(program))
        _run([_mutated(b, rng, WEIRD) if i == target else b for i, b in enumerate(program)],
             judged=False)


def test_one_poisoned_candidate_leaves_the_others_ordered_and_says_why(caplog, monkeypatch):
    program = _program()
    detector1 = [b for b in program if b["stage"] == "detector1"]
    poisoned = detector1[2]["exposure_id"]
    # A decision that raises for one exposure (a garbled NEXPOSUR used to make
    # int() raise here; the visit's count now reads it as absent, as
    # steps/visit_tally.py reads every count).
    complete = PlannerState._visit_complete

    def raising(self, sci):
        if sci.exposure.exposure_id == poisoned:
            raise ValueError("a decision that fails for this exposure")
        return complete(self, sci)

    monkeypatch.setattr(PlannerState, "_visit_complete", raising)
    state = PlannerState(**bench.RecordPath.settings())
    orders = []
    with caplog.at_level(logging.ERROR, logger="calstream.planner"):
        for n, body in enumerate(detector1):
            orders += state.observe(contract.Message("product", body), bench.T0 + n)
        for n in range(3):
            orders += state.tick(bench.T0 + 100 + n)
    ordered = {e.message["exposure_id"] for e in orders if e.topic == "work.stage2"}
    assert ordered == {b["exposure_id"] for b in detector1} - {poisoned}
    assert "ValueError" in state.candidates[poisoned].waiting_for["error"]
    assert sum(poisoned in r.getMessage() for r in caplog.records) == 1  # logged once


def _reference_rule(name, header):
    """header_copy_problems as first written, every rule in turn: its fast
    path must refuse exactly what this refuses, with the same reasons."""
    from calstream.steps.exposure import (
        COUNT_KEYWORDS,
        FITS_VALUE_TYPES,
        count_problems,
        date_time_problems,
        name_header_disagreements,
        text_keyword_problems,
    )
    from calstream.steps.exposure_keywords import (
        GUIDER_EXP_TYPES,
        NOT_IN_GUIDER_HEADERS,
        REQUIRED_KEYWORDS,
    )
    odd = sorted(str(k)[:40] for k, v in header.items() if type(v) not in FITS_VALUE_TYPES)
    if odd:
        return [f"header value(s) of {', '.join(odd[:10])} are not FITS values"]
    guider = str(header.get("EXP_TYPE", "")).strip().upper() in GUIDER_EXP_TYPES
    missing = [k for k in REQUIRED_KEYWORDS
               if header.get(k) is None and not (guider and k in NOT_IN_GUIDER_HEADERS)]
    if missing:
        return [f"header without required keyword(s) {', '.join(missing)}"]
    return (name_header_disagreements(name, header, guider) + text_keyword_problems(header)
            + count_problems({k: header[k] for k in COUNT_KEYWORDS if k in header})
            + date_time_problems(header))


def test_the_header_rules_fast_path_refuses_what_the_rules_refuse():
    from calstream.steps.exposure import header_copy_problems
    from calstream.steps.naming import parse_exposure_name
    from calstream.steps.synthetic.headers import synthetic_header

    rng = random.Random(5)
    names = ["jw01234001001_02101_00001_nrcb1", "jw01234001001_02101_00001-seg002_nrcb1",
             "jw01019001001_gs-acq1_2022117003102"]
    cases = [synthetic_header("NIRCAM", "NRC_IMAGE", PROGRAM="01234", OBSERVTN="001",
                              VISIT="001", EXPOSURE="00001"),
             synthetic_header("NIRCAM", "NRC_TSIMAGE", PROGRAM="01234", OBSERVTN="001",
                              VISIT="001", EXPOSURE="00001", EXSEGNUM=2, EXSEGTOT=3),
             synthetic_header("FGS", "FGS_ACQ1", PROGRAM="01019", OBSERVTN="001", VISIT="001")]
    keys = sorted({k for h in cases for k in h} | {"EXSEGTOT", "EXSEGNUM"})
    refused = 0
    for _ in range(3000):
        header = dict(rng.choice(cases))
        for _ in range(rng.choice([0, 1, 1, 2])):
            key = rng.choice(keys)
            if rng.random() < 0.2:
                header.pop(key, None)
            else:
                header[key] = rng.choice(WEIRD + HUGE + ["NRCB1", "nrcb1 ", "01234", 1234, "1",
                                                         "02", "01", 1, 3, "2026-05-26"])
        name = parse_exposure_name(rng.choice(names))
        problems = header_copy_problems(name, header)
        assert problems == _reference_rule(name, header), (name, header)
        refused += bool(problems)
    assert 300 < refused < 2900  # both ways were taken


def test_a_visit_announcing_the_most_exposures_still_gets_a_sendable_order():
    """NEXPOSUR = 100,000 is within a file's bounds. When the quiet period
    ends with one exposure calibrated, the degraded stage-3 order names the
    first hundred that never came and counts the rest: naming all of them
    made an order of megabytes, over the broker's 1 MB limit."""
    from calstream.steps.synthetic.headers import synthetic_header

    header = synthetic_header("NIRCAM", "NRC_IMAGE", PROGRAM="01234", OBSERVTN="001",
                              VISIT="001", EXPOSURE="00001", NEXPOSUR=100_000)
    state = PlannerState(companion_wait=60.0, level3_settle=0.0, level3_quiet_period=10.0)
    for n, stage in enumerate(("detector1", "stage2")):
        body = bench._product_body(stage, header, bench.T0 + n)
        state.observe(contract.Message("product", body), bench.T0 + n)
    orders = [e.message for e in state.tick(bench.T0 + 100) if e.topic == "work.stage3"]
    assert len(orders) == 1 and orders[0]["degraded"]
    assert "expected but never arrived: " in orders[0]["degraded"]
    # 100,000 exposures on each of module B's five detectors, one arrived.
    assert orders[0]["degraded"].endswith(" and 499899 more")
    assert len(contract.encode(orders[0])) < 100_000


def test_a_level3_candidate_whose_decision_raises_says_so_until_it_is_decided(monkeypatch):
    """The bulkhead's reason on a level-3 candidate is shown as its error in
    status (calstream status, the console) and goes once a decision of it
    goes through, when its order is sent."""
    from calstream.daemon.deciders.level3_state import Level3State

    state = PlannerState(companion_wait=60.0, level3_settle=0.0, level3_quiet_period=600.0)
    real = Level3State._evaluate
    broken = {"on": True}

    def evaluate(self, cand, now, *ticked):
        if broken["on"]:
            raise LookupError("injected")
        return real(self, cand, now, *ticked)

    monkeypatch.setattr(Level3State, "_evaluate", evaluate)
    for n, body in enumerate(_program()):
        state.observe(contract.Message("product", body), bench.T0 + n)
    assert not [e for e in state.tick(bench.T0 + 100) if e.topic == "work.stage3"]
    [cand] = state.summary(bench.T0 + 100)["level3"]["candidates"]
    assert cand["waiting_for"] == {"error": "cannot be decided: LookupError: injected"}
    broken["on"] = False
    assert [e for e in state.tick(bench.T0 + 101) if e.topic == "work.stage3"]
    assert not state.summary(bench.T0 + 101)["level3"]["candidates"]  # closed
    assert all(c.fault is None for c in state.stage3.candidates.values())


def test_the_planners_own_dead_letter_fits_whatever_path_its_event_names():
    """The planner's dead letter named the refused event's input path as it
    came: a forged one of 900 KB made a letter over the size every reader
    takes (the encoding refused it, and the letter went without its record,
    not redrivable). Its texts are bounded as every letter's are."""
    event = contract.Message("product", json.loads(
        next(bench.program_records(1, 1))))
    event.body["inputs"] = [{"path": "/inbox/" + "x" * 900_000, "digest": "sha256:" + "0" * 64}]
    letter = PlannerState(**bench.RecordPath.settings())._dead_letter(event, "no route").message
    assert len(letter["path"]) < 5_000 and letter["path"].startswith("/inbox/xxx")
    assert len(contract.encode(letter)) < contract.MAX_MESSAGE_BYTES
