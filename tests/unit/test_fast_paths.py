"""The planner's fast ways in mean what the reference ways mean.

orjson parses (topics/contract.py) and writes the event-id digests
(deciders/event_checks.py) only where its result is the reference's; a
redelivered record (deciders/product_intake.py) is the event it was, and its
event id is still checked.
"""

import datetime
import json
import random

import pytest

from calstream.daemon.deciders.event_checks import EventIds, content_digest
from calstream.daemon.deciders.product_intake import ProductIntake
from calstream.steps.routing import RoutingError, _route, route
from calstream.steps.synthetic.headers import synthetic_header
from calstream.topics import canonical_json, contract
from calstream.topics.contract import InvalidMessage
from tests.unit.test_untrusted_messages import HOSTILE

TRICKY = [
    b'{"a":1,"a":2}', b'{"a" :1,"a":2}', b'{"a":":","a":2}', b'{"x":"\\":","a":1,"a":2}',
    b'{"a":{"b":1,"b":1}}', b'[{"k":1},{"k":1}]', b'{"a\\u0022":1,"a\\"":2}',
    b'{"n":-9223372036854775809}', b'{"n":18446744073709551615}', b'{"n":1e400}',
    b'{"n":123456789012345678901234567890}', b'{"n":1e-400}', b'{"n":-0}', b'{"n":-0.0}',
    b'["\\ud800"]', b'\xef\xbb\xbf{}', b'{"s":"\xc3\xa9"}', b'[' * 40 + b']' * 40,
    b'[' * 900 + b']' * 900, b'{"a":[1,2.5,null,true,false]}\n', b'{ "a" : 1 , "b" : "c" }',
]


def _reference(raw: bytes):
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=contract._unique_keys,
                           parse_int=contract._bounded_int, parse_float=contract._finite_float,
                           parse_constant=contract._reject_constant)
    except (InvalidMessage, ValueError, RecursionError):
        return ("refused", None)
    # Nesting: at most MAX_NESTING levels, whatever stack the reader has left.
    return ("refused", None) if contract._nested_deeper(value, contract.MAX_NESTING) \
        else ("ok", value)


@pytest.mark.parametrize("raw", TRICKY + [v for v in HOSTILE.values()
                                           if len(v) <= contract.MAX_MESSAGE_BYTES])
def test_the_fast_parse_accepts_what_the_reference_accepts_and_reads_it_alike(raw):
    assert_read_as_the_reference(raw)


def assert_read_as_the_reference(raw: bytes) -> None:
    """contract.parse_json refuses what the reference refuses, and reads the
    rest to the same values, leaf types included."""
    expected = _reference(raw)
    try:
        got = ("ok", contract.parse_json(raw))
    except InvalidMessage:
        got = ("refused", None)
    assert got[0] == expected[0]
    if got[0] == "ok":
        assert json.dumps(got[1]) == json.dumps(expected[1])
        assert [type(x) for x in _leaves(got[1])] == [type(x) for x in _leaves(expected[1])]


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _reference_canonical(content):
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()


def _awkward_contents(rng: random.Random, n: int = 3000):
    """Small JSON objects of the values orjson and json may write apart:
    tiny, huge and negative-zero floats, control and non-ASCII characters,
    integers around and beyond 64 bits."""
    floats = [0.0, -0.0, 1e-5, 3.2e-7, 1e-4, 0.1, 1.5, 1e15, 1e16, 1e22, 2.0 ** 70, 5e-324]
    strings = ["", "a", "\x7f", "\x1f\b\f\n\t\"\\/", "é", "\u2028", "ünï", "<&>"]
    ints = [0, -1, 2 ** 63, -(2 ** 63), 2 ** 64 - 1, 2 ** 64, 10 ** 29]
    for _ in range(n):
        content = {rng.choice(strings + ["k", "z", "A"]): rng.choice(floats + strings + ints)
                   for _ in range(4)}
        content["nested"] = [rng.choice(floats + strings + ints + [None, True, False])
                             for _ in range(3)]
        yield content


def test_the_event_id_digest_text_is_the_reference_text():
    for content in _awkward_contents(random.Random(7)):
        assert contract.canonical_json(content) == _reference_canonical(content), content
    for value in [["kind", ("a", 1), [("x", "y")]], "text", 1.5e-5, ("t",), {"k": (1,)}]:
        assert contract.canonical_json(value) == _reference_canonical(value)
    odd = {"t": (1, 2), "when": datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)}
    assert contract.canonical_json(odd) == _reference_canonical(odd)


def test_a_message_is_sent_as_the_reference_text():
    """contract.encode writes orjson's text where it is json.dumps's, and
    refuses what json.dumps refuses (no ``default=str`` for messages)."""
    from calstream.topics.canonical_json import compact_json

    for content in _awkward_contents(random.Random(11)):
        assert compact_json(content) == json.dumps(
            content, sort_keys=True, separators=(",", ":")).encode(), content
    for value in [["kind", ("a", 1), [("x", "y")]], "text", 1.5e-5, ("t",), {"k": (1,)}]:
        assert compact_json(value) == json.dumps(
            value, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(TypeError):
        compact_json({"when": datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)})
    order = json.loads(_product())
    assert contract.encode(contract.Message("product", order)) == json.dumps(
        order, sort_keys=True, separators=(",", ":")).encode()


def _product(**over) -> bytes:
    body = {"schema": "calstream.product", "schema_version": contract.SCHEMA_VERSION,
            "event_id": "e" * 64, "emitted_at": "2027-01-01T00:00:00.000Z", "work_id": "f" * 64,
            "stage": "detector1", "pipeline": "calwebb_detector1", "outcome": "success",
            "program": "01234", "observation": "001",
            "exposure_id": "jw01234001001_02101_00001_nrcb1",
            "product_name": "jw01234001001_02101_00001_nrcb1",
            "header": synthetic_header("NIRCAM", "NRC_IMAGE", PROGRAM="01234", OBSERVTN="001",
                                       VISIT="001", EXPOSURE="00001"),
            "inputs": [{"path": "/inbox/jw01234001001_02101_00001_nrcb1_uncal.fits",
                        "digest": "sha256:" + "0" * 64}],
            "outputs": [{"path": "/products/01234/001/jw01234001001_02101_00001_nrcb1_rate.fits",
                         "digest": "sha256:" + "1" * 64, "size": 1, "suffix": "rate"}],
            "jwst_version": "3.0.0", "crds_context": "jwst_0001.pmap",
            "pointing_quality": "CALCULATED_TRACK_TR_202111", "pointing_provisional": False}
    body.update(over)
    return json.dumps(body).encode()


def test_a_redelivery_is_the_same_event_and_its_id_is_still_checked():
    intake, ids = ProductIntake(products_root="/products", input_roots=["/inbox"]), EventIds()
    raw = _product()
    first, problems = intake.take(raw, ids)
    assert problems == [] and first.body == contract.decode(raw).body
    again, problems = intake.take(bytes(raw), ids)
    assert again is first and problems == []
    assert content_digest(first.body) == ids._digests[first.event_id]
    # Re-emitted (a new emitted_at): judged whole, the same content.
    assert intake.take(_product(emitted_at="2027-01-02T00:00:00.000Z"), ids)[1] == []
    # The id taken by other content since (its memory bounded): refused, cached or not.
    small = EventIds(capacity=1)
    assert intake.take(raw, small)[1] == []
    small.consistent("x" * 64, {})  # "e"*64 forgotten ...
    small.consistent("e" * 64, {"other": 1})  # ... and taken by other content
    assert "already used" in intake.take(raw, small)[1][0]


def test_an_impossible_event_is_judged_again_every_time():
    intake, ids = ProductIntake(products_root="/products", input_roots=["/inbox"]), EventIds()
    raw = _product(outputs=[{"path": "/etc/passwd", "digest": "sha256:" + "1" * 64,
                             "size": 1, "suffix": "rate"}])
    for _ in range(2):
        assert "outside" in intake.take(raw, ids)[1][0]
    assert intake._accepted == {}
    with pytest.raises(InvalidMessage):
        intake.take(b'{"schema":"calstream.product","schema":"calstream.product"}', ids)


def _route_or_error(fn, header):
    try:
        return fn(header)
    except RoutingError as exc:
        return str(exc)


def test_a_route_remembered_by_the_keywords_it_read_is_the_route_computed():
    from calstream.steps.synthetic.headers import CASES
    variations = [{}, {"TSOVISIT": True}, {"TSOVISIT": 1}, {"TSOVISIT": 1.0}, {"TSOVISIT": "T"},
                  {"TSOVISIT": "maybe"}, {"NINTS": 1}, {"NINTS": 1.0}, {"NINTS": True},
                  {"NINTS": 1.5}, {"NINTS": "2"}, {"BKGDTARG": True}, {"IS_IMPRT": "T"},
                  {"IS_PSF": 0.0}, {"IS_PSF": -0.0}, {"DETECTOR": None}, {"PUPIL": "GDHS0"},
                  {"SUBARRAY": ["a list"]}, {"FILTER": "N/A"}, {"EXP_TYPE": None}]
    for case in CASES.values():
        for change in variations:
            for _ in range(2):  # computed, then remembered
                header = case.header(**change)
                assert _route_or_error(route, header) == _route_or_error(_route, header), \
                    (case.id, change)


def _formats(schema, path=()):
    """(path, format) of every "format" in a schema, following properties and $refs."""
    if isinstance(schema, dict):
        if "format" in schema:
            yield path, schema["format"]
        for key, sub in schema.items():
            step = () if key in ("properties", "$defs", "items") else (key,)
            yield from _formats(sub, path + step)
    elif isinstance(schema, list):
        for sub in schema:
            yield from _formats(sub, path)


def test_the_product_schema_has_no_date_time_the_fast_intake_does_not_check():
    from calstream.daemon.deciders.product_intake import DATE_TIMES

    found = set(_formats(contract.schema("product")))
    assert found == {(p, "date-time") for p in DATE_TIMES}


@pytest.mark.parametrize("raw", [_product(), _product(emitted_at="2027-01-01 00:00:00"),
                                 _product(emitted_at="2027-01-01T00:00:00.000"),
                                 _product(arrived_at="yesterday"), _product(arrived_at=None),
                                 _product(replay={"replay_id": "0" * 16, "namespace": "r1",
                                                  "requested_at": "soon"}),
                                 _product(replay={"replay_id": "0" * 16, "namespace": "r1",
                                                  "requested_at": "2027-01-01T00:00:00Z"}),
                                 _product(schema_version="2.0"), _product(schema="calstream.hold"),
                                 _product(inputs="none"), b"[1]", b'"x"', b"{}"]
                         + [v for v in HOSTILE.values() if len(v) <= contract.MAX_MESSAGE_BYTES])
def test_the_fast_product_decode_is_the_contracts(raw):
    from calstream.daemon.deciders.product_intake import decode_product

    def outcome(fn):
        try:
            return ("ok", fn(raw).body)
        except InvalidMessage as exc:
            return ("refused", str(exc))

    assert outcome(decode_product) == outcome(lambda r: contract.decode(r, expected="product"))


def test_orjson_writes_a_float_as_json_does_except_below_1e_4_where_the_text_says_so():
    # What canonical_json_of_parsed rests on, over every binary exponent and
    # random bit patterns: equal text, or a small float the text shows.
    import math
    import struct

    import orjson

    rng = random.Random(11)
    values = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
              for _ in range(200_000)]
    values += [m * 2.0 ** e for e in range(-1074, 1024) for m in (1.0, 1.3, 1.999)]
    values += [float(f"{m}e{e}") for e in range(-330, 310) for m in ("1", "4.94", "9.999999")]
    for x in (v for v in values if math.isfinite(v)):
        for value in (x, -x):
            text = orjson.dumps([value])
            if value != 0.0 and abs(value) < 1e-4:
                assert canonical_json._SMALL_FLOAT.search(text), value
            elif not canonical_json._SMALL_FLOAT.search(text):
                assert text == json.dumps([value]).encode(), value


def test_the_digest_text_of_a_parsed_body_is_the_reference_text():
    rng = random.Random(5)
    floats = [0.0, -0.0, 1e-5, -3.2e-7, 1e-4, 9.99e-5, 0.1, 1.5, 1e15, 1e16, 1e22, 2.0 ** 70,
              5e-324, 1e-300]
    strings = ["", "a", "\x7f", "\x1f\b\f\n\t\"\\/", "é", "\u2028", "0.00001", "1e-05", ":0.0000",
               "x1e-7", "[-0.00001"]
    ints = [0, -1, 2 ** 63, -(2 ** 63), 2 ** 64 - 1, 2 ** 64, 10 ** 29]
    scalars = floats + strings + ints + [None, True, False]
    raws = [raw for raw in TRICKY if _reference(raw)[0] == "ok"]
    for _ in range(3000):
        body = {rng.choice(strings + ["k", "z", "A"]): rng.choice(scalars) for _ in range(4)}
        body["nested"] = [rng.choice(scalars), {"x": rng.choice(scalars)}, [rng.choice(scalars)]]
        raws.append(json.dumps(body).encode())
    for raw in raws:
        value = contract.parse_json(raw)
        assert canonical_json.canonical_json_of_parsed(value) == _reference_canonical(value), raw
        if isinstance(value, dict):
            assert content_digest(value, parsed=True) == content_digest(value)


def test_a_parsed_exposure_name_is_the_one_its_dataclass_makes():
    import dataclasses

    from calstream.steps import naming

    for name in ["jw00001001001_02101_00001_nrcb1", "/in/jw01234001001_02101_00001_mirimage.fits",
                 "jw01234001001_02101_00001-seg002_nrcalong_rate.fits",
                 "jw01019001001_gs-acq1_2022117003102_cal.fits",
                 "jw01019001001_gs-id_1_image_uncal.fits"]:
        base = name.rsplit("/", 1)[-1]
        match = naming._NAME.match(base) or naming._GUIDER_NAME.match(base)
        parts = {k: v for k, v in match.groupdict().items() if k != "extension"}
        if "guider" in parts:
            parts |= {"visit_group": "", "sequence": "", "activity": "", "exposure": "",
                      "detector": ""}
        expected = naming.ExposureName(**parts)
        got = naming.parse_exposure_name.__wrapped__(name)
        assert type(got) is naming.ExposureName
        assert got == expected and hash(got) == hash(expected) and repr(got) == repr(expected)
        assert list(vars(got).items()) == list(vars(expected).items())
        assert dataclasses.replace(got, suffix="cal") == dataclasses.replace(expected, suffix="cal")
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.program = "99999"
