"""Which members' references are looked up before a run on an association:
one look-up per distinct selection, a date span by its two ends."""

from __future__ import annotations

from calstream.steps.member_references import lookups, science_members, selections

MATCH = ["META.INSTRUMENT.DETECTOR", "META.SUBARRAY.NAME"]
DATES = ["META.OBSERVATION.DATE", "META.OBSERVATION.TIME"]


def _member(detector: str, date: str = "2025-03-01", time: str = "10:00:00", **more) -> dict:
    return {"meta.instrument.detector": detector, "meta.subarray.name": "FULL",
            "meta.observation.date": date, "meta.observation.time": time, **more}


def test_science_members_in_order_once_each():
    asn = {"products": [
        {"members": [{"expname": "a_cal.fits", "exptype": "science"},
                     {"expname": "b_cal.fits", "exptype": "psf"},
                     {"expname": "c.ecsv", "exptype": "sourcecat"}]},
        {"members": [{"expname": "d_cal.fits", "exptype": "SCIENCE"},
                     {"expname": "a_cal.fits", "exptype": "science"}]}]}
    assert science_members(asn) == ["a_cal.fits", "d_cal.fits"]
    assert science_members({}) == []


def test_members_alike_but_for_the_date_are_one_group_sorted_by_date():
    members = [_member("NRCA1", time=f"10:0{n}:00") for n in (3, 1, 2)] + [_member("NRCA2")]
    groups = selections(members, MATCH + DATES, DATES)
    assert [len(g) for g in groups] == [3, 1]
    assert [m["meta.observation.time"] for m in groups[0]] == ["10:01:00", "10:02:00",
                                                                "10:03:00"]
    # crds's names and the model's flattened names are the same keys.
    assert len(selections([{"META.INSTRUMENT.DETECTOR": "NRCA1"}, _member("NRCA1")],
                          MATCH, [])) == 2  # the subarray differs (absent: None)
    assert len(selections([_member("NRCA1", extra="x"), _member("NRCA1", extra="y")],
                          MATCH, DATES)) == 1  # a key no rule matches on selects nothing


def _counting(answers):
    asked = []

    def lookup(params):
        asked.append(params["meta.observation.date"])
        return answers(params["meta.observation.date"])

    return asked, lookup


def test_a_date_span_is_looked_up_at_its_ends_and_within_only_when_they_differ():
    group = [_member("NRCA1", date=f"2025-03-0{n}") for n in range(1, 6)]
    asked, lookup = _counting(lambda date: "ref_0001")
    assert lookups(group, DATES, lookup) == 2
    assert asked == ["2025-03-01", "2025-03-05"]
    # A USEAFTER inside the span: every date of it asked.
    asked, lookup = _counting(lambda date: "ref_0002" if date >= "2025-03-03" else "ref_0001")
    assert lookups(group, DATES, lookup) == 5
    assert sorted(asked) == [f"2025-03-0{n}" for n in range(1, 6)]
    # One date (or one member): one look-up.
    asked, lookup = _counting(lambda date: "ref_0001")
    assert lookups([_member("NRCA1")] * 100, DATES, lookup) == 1 and len(asked) == 1
