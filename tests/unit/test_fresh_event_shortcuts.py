"""Session 8's second pass on a fresh event's way in: each shortcut against
the computation it replaces (tests/unit/test_fast_paths.py has the first's)."""


import orjson
import pytest

from calstream.topics import contract
from tests.unit.test_fast_paths import assert_read_as_the_reference


def test_orjson_writes_no_deeper_than_the_fast_parse_assumes():
    # The fast parse counts no brackets when orjson's text written again is
    # the record: it rests on orjson refusing to write deeper nesting.
    deepest = contract._WRITTEN_DEPTH
    assert orjson.dumps(orjson.loads(b"[" * deepest + b"]" * deepest))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(orjson.loads(b"[" * (deepest + 1) + b"]" * (deepest + 1)))


@pytest.mark.parametrize("depth", [1, 31, 32, 33, 100, 253, 254, 255, 300, 1000, 1100])
@pytest.mark.parametrize("shape", ["list", "object", "mixed"])
def test_a_deep_record_is_read_as_the_reference_reads_it(depth, shape):
    opening = {"list": b"[", "object": b'{"a":', "mixed": b'{"a":['}[shape]
    closing = {"list": b"]", "object": b"}", "mixed": b"]}"}[shape]
    assert_read_as_the_reference(opening * depth + b"1" + closing * depth)
