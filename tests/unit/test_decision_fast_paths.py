"""The planner decision's shortcuts give what the long way gives.

Each shortcut here skips work for the common case (imaging, whole
segments, integer keywords, a visit's exposures alike); each is compared
with the computation it stands for, on the cases it must not change.
"""

from __future__ import annotations

import random

import pytest

from calstream.steps.associations.level2 import build_level2
from calstream.steps.associations.matching import Companions, gather_companions
from calstream.steps.associations.records import Exposure
from calstream.steps.completeness import _Unit
from calstream.steps.routing import RoutingError, route
from calstream.steps.routing_terms import HeaderView
from calstream.steps.synthetic.headers import exposure_id, synthetic_header
from calstream.steps.visit_tally import DetectorTally


def _gaps_reference(unit: _Unit) -> int:
    return sum(1 for s in range(1, unit.segtot + 1) if s not in unit.segments)


def test_segment_gaps_counted_over_the_segments_seen_match_the_range():
    rng = random.Random(8)
    for _ in range(5000):
        unit = _Unit(rng.randint(-1, 7), set(rng.sample(range(-2, 10), rng.randint(0, 6))))
        assert DetectorTally._gaps(unit) == _gaps_reference(unit), unit


def _integer_reference(value):
    h = HeaderView({"K": value})
    if not h.has("K"):
        return None
    if isinstance(value, bool):
        raise RoutingError("bool")
    number = float(value)
    if not number.is_integer():
        raise RoutingError("not an integer")
    return int(number)


@pytest.mark.parametrize("value", [0, 1, -1, 7, 2 ** 53, -2 ** 53, 2 ** 53 + 1, 2 ** 60 + 3,
                                   -2 ** 60 - 3, True, False, "3", " 4 ", "N/A", "", 3.0,
                                   2.5, None])
def test_integer_keywords_read_as_the_float_round_trip_reads_them(value):
    def outcome(read):
        try:
            got = read()
            return ("value", got, type(got))
        except RoutingError:
            return ("refused",)

    assert outcome(lambda: HeaderView({"K": value}).integer("K")) == \
        outcome(lambda: _integer_reference(value))


def _exposure(**keywords) -> Exposure:
    header = synthetic_header("NIRCAM", "NRC_IMAGE", SUBARRAY="SUB160P", **keywords)
    eid = exposure_id(header)
    return Exposure(eid, header, {"rate": f"/p/{eid}_rate.fits"})


def test_a_route_that_takes_no_companions_chooses_and_awaits_none():
    science = _exposure(BKGDTARG=True)  # a background target is calibrated alone
    r = route(science.header)
    assert r.stage2 is not None and r.needs == ()
    others = [_exposure(EXPOSURE=f"{n:05d}") for n in (2, 3)]
    assert gather_companions(r, science, others, visit_complete=False,
                             expected=("background",)) == Companions()


def test_the_shared_parts_of_level2_associations_follow_each_exposures_keywords():
    first = _exposure(TARGETID=1, FILTER="F200W", EXPOSURE="00001")
    same_visit = _exposure(TARGETID=1, FILTER="F200W", EXPOSURE="00002")
    other_filter = _exposure(TARGETID=1, FILTER="F150W", EXPOSURE="00003")
    other_target = _exposure(TARGETID=2, FILTER="F200W", EXPOSURE="00004")
    other_observation = _exposure(TARGETID=1, FILTER="F200W", OBSERVTN="002")
    built = {e.exposure_id: build_level2(route(e.header), e, visit_complete=True)
             for e in (first, same_visit, other_filter, other_target, other_observation)}
    a, b, f, t, o = built.values()
    for field in ("asn_id", "target", "constraints"):
        assert a[field] == b[field]
    assert "FILTER=F200W" in a["constraints"] and "FILTER=F150W" in f["constraints"]
    assert (a["target"], t["target"]) == ("1", "2")
    assert (a["asn_id"], o["asn_id"]) == ("o001", "o002")
    assert "observation=002" in o["constraints"]


def test_visit_tally_says_what_visit_status_says_arrival_after_arrival():
    from calstream.steps.completeness import visit_status
    from calstream.steps.visit_tally import VisitTally

    rng = random.Random(14)
    for _ in range(150):
        nexposur = rng.randint(1, 4)
        tally, arrived = VisitTally(), {}
        for _ in range(rng.randint(1, 10)):
            keywords = {"EXPOSURE": f"{rng.randint(1, 5):05d}", "NEXPOSUR": nexposur,
                        "ACT_ID": rng.choice(["01", "01", "02"]),
                        "DETECTOR": rng.choice(["NRCB1", "NRCB1", "NRCA1"])}
            segments = rng.choice([None, None, 1, 2, 3])
            if segments is not None:
                keywords.update(EXSEGTOT=segments, EXSEGNUM=rng.randint(1, segments))
            e = _exposure(**keywords)
            arrived[e.exposure_id] = e
            tally.add(e)
            visit = e.name.visit_id
            assert tally.complete == visit_status(arrived.values()).visit_complete(visit), \
                sorted(arrived)


def test_routes_and_level3_keys_hash_as_their_fields_and_leave_the_hash_behind():
    """Both keep their hash once worked out (the planner's memo and index keys):
    it is the fields' hash, as dataclass makes it, and a pickle never carries
    it (a str's hash differs between processes)."""
    import dataclasses
    import pickle

    from calstream.daemon.deciders.level3_candidates import keys_of

    headers = [synthetic_header("NIRCAM", "NRC_IMAGE", FILTER=f) for f in ("F150W", "F200W")]
    headers.append(synthetic_header("NIRSPEC", "NRS_FIXEDSLIT"))
    for header in headers:
        r = route(header)
        found = keys_of(Exposure(exposure_id(header), header))
        for obj in [r, *(k for k, _ in found)]:
            fields = tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))
            assert hash(obj) == hash(fields)  # worked out, then kept
            assert hash(obj) == hash(fields)
            again = pickle.loads(pickle.dumps(obj))
            assert "_hash" not in again.__dict__
            assert again == obj and hash(again) == hash(obj)
            twin = dataclasses.replace(obj)
            assert twin == obj and hash(twin) == hash(obj)


def test_a_kept_hash_is_the_fields_hash_for_one_field_too():
    import dataclasses

    from calstream.steps.kept_hash import kept_hash

    @dataclasses.dataclass(frozen=True)
    class One:
        a: str
        __hash__ = kept_hash

    @dataclasses.dataclass(frozen=True)
    class Two:
        a: str
        b: tuple
        __hash__ = kept_hash

    assert hash(One("x")) == hash(("x",)) and hash(One("x")) == hash(One("x"))
    assert hash(Two("x", (1,))) == hash(("x", (1,)))
    assert {One("x"): 1}[One("x")] == 1
