"""The planner's once-a-second work reads the open level-2 candidates only
(deciders/planner_records.OpenCandidates): what it ticks and reports is what a
scan of every candidate would find, in the same order, whatever the history;
and a level-3 candidate's words (what it waits for) are written again only
when a member changed them, not at every tick."""

from __future__ import annotations

import json
from collections.abc import Iterator

from calstream.daemon.deciders import planner_snapshot
from calstream.daemon.deciders.planner_records import Candidate, OpenCandidates
from calstream.daemon.deciders.planner_state import PlannerState
from calstream.steps.synthetic.headers import exposure_id, synthetic_header

from .test_level3_state import stage3
from .test_planner_state import T0, WAIT, imaging, nod, product


def _scanned(state: PlannerState) -> list[str]:
    """What tick and summary read before: every candidate not ordered complete."""
    return [c.science for c in state.candidates.values() if c.sent is None or not c.sent_complete]


def _read(state: PlannerState) -> list[str]:
    return [c.science for c in state.open_candidates.in_order()]


def test_the_open_set_follows_each_candidates_orders_in_the_candidates_order():
    cands = [Candidate(f"jw01234001001_02101_0000{n}_nrcb1", None, 0.0,  # type: ignore[arg-type]
                       number=n) for n in range(4)]
    index = OpenCandidates()
    for c in cands:
        index.add(c)
    index.sent(cands[1], "w1", True)  # ordered complete: closed
    index.sent(cands[0], "w0", False)  # ordered degraded: still open
    assert [c.science[-7] for c in index.in_order()] == ["0", "2", "3"]
    index.sent(cands[1], "w1b", False)  # a less complete order recognised: open again
    index.sent(cands[3], "w3", True)
    assert [c.science[-7] for c in index.in_order()] == ["0", "1", "2"]  # 1 at its own place
    cands[2].sent, cands[2].sent_complete = "w2", True  # changed behind its back
    assert [c.science[-7] for c in index.in_order()] == ["0", "1"]  # judged again when read
    assert len(index) == 2  # and left
    assert [c.science[-7] for c in OpenCandidates(cands).in_order()] == ["0", "1"]


def _stream() -> Iterator[tuple[str, object, float]]:
    """Imaging ordered at once, nods that wait, go degraded, then complete."""
    for n in range(1, 6):
        yield "product", product(imaging(n)), T0 + n
    yield "product", product(nod(1), at=T0 + 10), T0 + 10
    yield "tick", None, T0 + 20
    yield "product", product(nod(2), at=T0 + 30), T0 + 30
    yield "tick", None, T0 + WAIT + 40  # the nods give up on each other: degraded
    yield "product", product(imaging(6), at=T0 + WAIT + 50), T0 + WAIT + 50
    yield "product", product(nod(3), at=T0 + WAIT + 60), T0 + WAIT + 60  # complete now
    yield "tick", None, T0 + 3 * WAIT


def test_tick_and_status_read_what_a_scan_of_every_candidate_would():
    state = PlannerState(companion_wait=WAIT)
    seen_open = set()
    for kind, payload, now in _stream():
        if kind == "product":
            state.observe(payload, now)
        else:
            state.tick(now)
        assert _read(state) == _scanned(state)
        summary = state.summary(now)
        assert summary["waiting"] == sum(c.sent is None for c in state.candidates.values())
        assert summary["degraded"] == sum(c.sent is not None and not c.sent_complete
                                          for c in state.candidates.values())
        seen_open.add((summary["waiting"], summary["degraded"]))
        # A restored state reads the same, and numbers its candidates alike.
        body = planner_snapshot.take({"live": state}, holds=state.holds, plans={})
        restored = planner_snapshot.restore(json.loads(json.dumps(body)),
                                            companion_wait=WAIT, level3_settle=0.0,
                                            level3_quiet_period=3600.0)[0]["live"]
        assert _read(restored) == _read(state)
        assert [c.number for c in restored.candidates.values()] == \
            [c.number for c in state.candidates.values()]
    # The stream went through waiting, degraded and all-complete states.
    assert {(0, 0), (0, 2)} <= seen_open and any(w > 0 for w, _ in seen_open)


class _NoScans(dict):
    """Candidates that refuse to be read whole: a scan of the history."""

    def values(self):
        raise AssertionError("every candidate was read")

    items = __iter__ = values


def test_the_once_a_second_work_does_not_read_every_candidate():
    state = PlannerState(companion_wait=WAIT)
    for n in range(1, 41):
        state.observe(product(synthetic_header("NIRCAM", "NRC_IMAGE", EXPOSURE=f"{n:05d}",
                                               NEXPOSUR=40)), T0 + n)
    state.observe(product(nod(1), at=T0 + 50), T0 + 50)
    state.candidates = _NoScans(state.candidates)
    assert state.summary(T0 + 60)["waiting"] == 1
    degraded = state.tick(T0 + WAIT + 60)
    assert [e.key for e in degraded if e.topic == "work.stage2"] == \
        [product(nod(1))["exposure_id"]]
    assert state.summary(T0 + WAIT + 61)["degraded"] == 1


def test_a_level3_candidate_is_settled_when_its_last_order_combined_what_it_would_now():
    from calstream.daemon.deciders.level3_candidates import Candidate as Level3Candidate
    from calstream.daemon.deciders.level3_candidates import Sent

    cand = Level3Candidate(None, None, 0.0, 0.0)  # type: ignore[arg-type]
    assert cand.is_open  # nothing sent yet
    cand.signature = tuple(f"d{n}" for n in range(3))
    cand.sent = [Sent(1, "w1", tuple(f"d{n}" for n in range(3)), None)]  # equal, not the same
    assert cand.signature is not cand.sent[-1].signature
    assert not cand.is_open
    assert cand.signature is cand.sent[-1].signature  # one object from now on
    assert not cand.is_open
    cand.signature = (*cand.signature, "d3")  # a new member's stage-2 product
    assert cand.is_open
    cand.waiting_for = {"exposures": "1 expected by headers"}
    cand.signature = cand.sent[-1].signature
    assert cand.is_open  # waiting for something


def test_a_tick_keeps_what_a_level3_candidate_waits_for_in_words_until_a_member_changes_it():
    """Its words (the missing exposures: every member's visit read again) are
    written when status reads them after a change, not every second."""
    from .test_level3_state import QUIET, dither, feed, new_state

    state = new_state()
    for n in (1, 2, 5):
        feed(state, dither(n, nexp=5), T0 + n)
    [cand] = state.stage3.candidates.values()
    described = []
    describe = cand.describe
    cand.describe = lambda c: described.append(1) or describe(c)
    first = state.summary(T0 + 10)["level3"]["missing"]
    assert sorted(first) == ["jw01234001001_02101_00003_nrcb1", "jw01234001001_02101_00004_nrcb1"]
    for second in range(11, 20):  # quiet: ticks and status, nothing arrives
        assert stage3(state.tick(T0 + second)) == []
        assert state.summary(T0 + second)["level3"]["missing"] == first
    assert len(described) == 1
    feed(state, dither(3, nexp=5), T0 + 20)  # a member arrives: written anew
    assert list(state.summary(T0 + 21)["level3"]["missing"]) == \
        ["jw01234001001_02101_00004_nrcb1"]
    assert len(described) == 2
    [order] = stage3(state.tick(T0 + 20 + QUIET + 1))  # degraded, named as it is now
    assert "00004" in order["degraded"] and "00003" not in order["degraded"]


def test_a_degraded_order_is_decided_again_by_its_visit_not_by_every_tick(monkeypatch):
    """MIRI LRS waits for its TA confirmation until the visit is complete;
    ordered degraded after the wait, it is not ticked any more, and the
    arrival that completes its visit (no companion of it) closes it: the
    order already sent is the complete one now (the same inputs)."""
    state = PlannerState(companion_wait=WAIT)
    sci = synthetic_header("MIRI", "MIR_LRS-FIXEDSLIT", "no_nod", EXPOSURE="00002", NEXPOSUR=2)
    # Exposures 1 and 2 of the visit's activity (NEXPOSUR=2 numbers them 1..2).
    other = synthetic_header("MIRI", "MIR_IMAGE", EXPOSURE="00001", NEXPOSUR=2)
    state.observe(product(sci), T0)
    [degraded] = [e for e in state.tick(T0 + WAIT + 1) if e.topic == "work.stage2"]
    assert degraded.message["degraded"].startswith("Degraded")
    assert state.summary(T0 + WAIT + 2)["degraded"] == 1
    decided = []
    evaluate = PlannerState._evaluate
    monkeypatch.setattr(PlannerState, "_evaluate",
                        lambda self, c, now: decided.append(c.science) or evaluate(self, c, now))
    assert state.tick(T0 + WAIT + 3) == [] and decided == []  # time alone changes nothing
    emits = state.observe(product(other, at=T0 + WAIT + 10), T0 + WAIT + 10)
    assert decided == [exposure_id(other), exposure_id(sci)]
    assert [e.key for e in emits if e.topic == "work.stage2"] == [exposure_id(other)]
    assert state.summary(T0 + WAIT + 11)["degraded"] == 0
    assert _read(state) == _scanned(state) == []
