"""The third pass on a fresh product record's way in (deciders/product_intake.py,
deciders/event_checks.py): each shortcut against the computation it replaces,
over values a forger could write."""

import json

from calstream.daemon.deciders import event_checks
from calstream.daemon.deciders.event_checks import inside
from calstream.topics import contract
from tests.unit.test_fast_paths import _product


def test_the_path_judge_of_fixed_roots_is_inside():
    roots = ["/products", "/inbox/", "/", "/a/b", "//products", "/products/./x", "relative"]
    paths = ["/products", "/products/x", "/productsx/y", "/products/../etc", "/inbox/a.fits",
             "//products/x", "/products//x", "/products/./x", "/products/.hidden", "x/y",
             "/a/b/c", "/a/bc", "/a/b/", "/a/b/.", "", "/", "/inbox", "/inbox/x/../y"]
    for n in (1, 2):
        for i in range(len(roots)):
            chosen = tuple(roots[i:i + n])
            judge = event_checks._below(chosen)
            for path in paths:
                assert judge(path) == inside(path, chosen), (path, chosen)


def test_the_date_times_written_out_are_the_ones_at_the_paths():
    from calstream.daemon.deciders.product_intake import DATE_TIMES, _date_times

    def walked(body):
        found = []
        for path in DATE_TIMES:
            value = body
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            found.append(value)
        return tuple(found)

    for body in [{}, {"emitted_at": "a", "arrived_at": "b", "replay": {"requested_at": "c"}},
                 {"replay": None}, {"replay": "x"}, {"replay": ["requested_at"]},
                 {"arrived_at": None, "replay": {}}, {"emitted_at": 1}]:
        assert _date_times(body) == walked(body)


def _patterned(schema, path=()):
    """(path, pattern) of every "pattern" of the product schema."""
    if isinstance(schema, dict):
        if "pattern" in schema:
            yield path, schema["pattern"]
        for key, sub in schema.items():
            yield from _patterned(sub, (*path, key))


def test_the_intakes_patterns_match_as_jsonschema_rs_default_matches_them():
    import jsonschema_rs

    from calstream.daemon.deciders.product_intake import _structure

    schema = contract.schema("product")
    default = jsonschema_rs.validator_for(schema, validate_formats=False)
    fancy_features = ("(?", "\\1", "\\b", "\\k")  # what only fancy-regex could match
    assert all(not any(f in p for f in fancy_features) for _, p in _patterned(schema))
    base = json.loads(_product())
    texts = ["", "\n", "0" * 64, "0" * 64 + "\n", "0" * 63, "0" * 65, "a" * 64, "A" * 64,
             "sha256:" + "0" * 64, "sha256:" + "0" * 64 + "\n", "\n" + "0" * 64, "١" * 64,
             "01234", "0123", "012345", "01234\n", "٠١٢٣٤", "001", "1.4", "1.", "1.4\n",
             "2.0", "jw0", "jw", "jwA", "jw0/x", "jw0" + "a" * 199, "jw0" + "a" * 200,
             "jw01234001001_02101_00001_nrcb1", "jw01234001001_02101_00001_nrcb1\n",
             "jwst_0001.pmap", "jwst_0001.pmap\n", "x.pmap", "JWST.pmap", "a" * 41 + ".pmap",
             "live", "r1", "-r1", "r1\n", "r" * 63, "r" * 64, "é", "jw0é"]
    bodies = []
    for key in ["schema_version", "event_id", "work_id", "program", "observation",
                "exposure_id", "product_name", "crds_context", "namespace"]:
        bodies += [{**base, key: t} for t in texts]
    for t in texts:
        bodies.append({**base, "inputs": [{"path": "/inbox/x", "digest": t}]})
        bodies.append({**base, "replay": {"replay_id": t, "namespace": t, "crds_context": t}})
    accepted = 0
    for body in bodies:
        assert _structure().is_valid(body) == default.is_valid(body), body
        accepted += default.is_valid(body)
    assert 20 < accepted < len(bodies) - 50


def _outcome(taken) -> tuple:
    """What a take gave, comparable: the event and its problems, or the refusal."""
    if isinstance(taken, Exception):
        return ("refused", type(taken).__name__, str(taken))
    event, problems = taken
    return ("taken", event.type, json.dumps(event.body, sort_keys=True), tuple(problems))


def test_a_batch_taken_ahead_is_taken_as_one_record_after_another():
    """The planner loop takes a fetch's records together before deciding
    (doers/planner_loop.py, ProductIntake.take_each): each record must come
    out as ``take`` makes it just before its decision, through every way a
    record can go (accepted, redelivered, refused, impossible, an event id
    used again for other content, the memory of accepted bytes overflowing)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import bench_planner as bench

    from calstream.daemon.deciders.event_checks import EventIds
    from calstream.daemon.deciders.product_intake import ProductIntake

    records = list(bench.program_records(1, 6))
    first = json.loads(records[0])
    reused_id = dict(first, work_id="f" * 64)  # the same event id for other content
    outside = dict(first, outputs=[dict(first["outputs"][0], path="/etc/passwd")])
    stream = [*records, records[0], b"{not json", b'{"schema": "calstream.product"}',
              json.dumps(reused_id).encode(), json.dumps(outside).encode(), records[3],
              bytearray(records[4]), memoryview(records[5]), *records[:4]]

    def fresh() -> tuple[ProductIntake, EventIds]:
        return (ProductIntake(products_root=bench.PRODUCTS, input_roots=bench.ROOTS,
                              capacity=5), EventIds(capacity=8))

    intake, ids = fresh()
    one_by_one = []
    for raw in stream:
        try:
            one_by_one.append(_outcome(intake.take(raw, ids)))
        except contract.InvalidMessage as exc:
            one_by_one.append(_outcome(exc))
    for size in (1, 3, len(stream)):
        intake, ids = fresh()
        together = [_outcome(t) for i in range(0, len(stream), size)
                    for t in intake.take_each(stream[i:i + size], ids)]
        assert together == one_by_one, size
    kinds = {o[0] for o in one_by_one}
    assert kinds == {"taken", "refused"}
    assert any(o[0] == "taken" and any("already used" in p for p in o[3]) for o in one_by_one)
    assert any(o[0] == "taken" and any("outside" in p for p in o[3]) for o in one_by_one)


def test_a_record_whose_judging_raises_is_that_records_fault_alone(monkeypatch):
    """Taken together, a record the checks cannot judge (a bug's exception)
    must not take its batch with it: its place holds the exception, which
    the loop raises at its decision (and dead-letters), the others are taken."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import bench_planner as bench

    from calstream.daemon.deciders import product_intake
    from calstream.daemon.deciders.event_checks import EventIds
    from calstream.daemon.deciders.product_intake import ProductIntake

    records = list(bench.program_records(1, 4))
    poisoned = json.loads(records[1])["event_id"]
    judge = product_intake.product_event_problems

    def raising(event, **kw):
        if event["event_id"] == poisoned:
            raise ZeroDivisionError("a bug")
        return judge(event, **kw)

    monkeypatch.setattr(product_intake, "product_event_problems", raising)
    intake = ProductIntake(products_root=bench.PRODUCTS, input_roots=bench.ROOTS)
    taken = intake.take_each([*records, None], EventIds())
    assert isinstance(taken[1], ZeroDivisionError)
    assert isinstance(taken[-1], contract.InvalidMessage)  # a tombstone: no value
    assert [t[1] for i, t in enumerate(taken[:-1]) if i != 1] == [[]] * (len(records) - 1)
    try:
        intake.take(records[1], EventIds())
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("take raises what the record's judging raised")


def test_a_stage2_events_identical_header_is_its_detector1_events():
    # Session 44: the planner kept two equal headers an exposure (its
    # detector1 and stage-2 events'); an identical copy is now the one kept.
    import sys
    from pathlib import Path

    from calstream.daemon.deciders.event_checks import EventIds
    from calstream.daemon.deciders.product_intake import ProductIntake

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import bench_planner as bench

    records = list(bench.program_records(31, 2))  # detector1 x2, then stage2 x2
    intake = ProductIntake(products_root=bench.PRODUCTS, input_roots=bench.ROOTS)
    taken = intake.take_each(records, EventIds())
    assert all(problems == [] for _, problems in taken)
    first, second = taken[0][0], taken[2][0]
    assert (first["stage"], second["stage"]) == ("detector1", "stage2")
    assert second["header"] is first["header"]
    # What the event says is the same as its own bytes say.
    assert second.body == json.loads(records[2])
    # A copy that differs in a type only keeps its own header (and is judged).
    body = json.loads(records[3])
    body["header"] = {**body["header"], "TARGETID": float(body["header"]["TARGETID"])}
    body["event_id"] = "0" * 64
    event, problems = intake.take(json.dumps(body).encode(), EventIds())
    assert problems == [] and event["header"] is not taken[1][0]["header"]
    assert type(event["header"]["TARGETID"]) is float
