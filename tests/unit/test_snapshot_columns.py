"""Columns written as changes from the previous value: read back equal,
of the same types, and refused whole when hand-edited into another shape."""

from __future__ import annotations

import json

import pytest

from calstream.daemon.deciders.snapshot_columns import decode_column, encode_column

ROWS = [
    {"id": "a", "n": 1, "header": {"EXPOSURE": "00001", "FLAG": True}, "outputs": [{"p": "x"}]},
    {"id": "b", "n": 1, "header": {"EXPOSURE": "00002", "FLAG": 1}, "outputs": [{"p": "y"}]},
    {"id": "b", "n": 1.0, "header": {"FLAG": 1, "EXPOSURE": "00002"}, "outputs": []},
    {"other": None},
    None, "text", 3, ["a", {"b": [1, 2]}], ["a", {"b": [1, 3]}], [], {}, {},
]


def _typed(value):
    """The value with every scalar's type beside it (True == 1 == 1.0 otherwise)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}, list(value)
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return type(value).__name__, value


def test_a_column_reads_back_as_written_with_its_types_and_key_order():
    encoded = json.loads(json.dumps(encode_column(ROWS)))
    assert [_typed(v) for v in decode_column(encoded)] == [_typed(v) for v in ROWS]


def test_a_changed_row_costs_only_its_changes():
    rows = [{"event_id": f"{n:064x}", "schema": "calstream.product", "header": {
        "PROGRAM": "00001", "EXPOSURE": f"{n:05d}", **{f"K{k}": k for k in range(30)}}}
        for n in range(100)]
    encoded = encode_column(rows)
    assert len(json.dumps(encoded)) < len(json.dumps(rows)) / 3
    assert decode_column(json.loads(json.dumps(encoded))) == rows


@pytest.mark.parametrize("encoded", [
    {"not": "a list"}, [{"a": 1}, ["~", "b", 2]], [{"a": 1}, ["~", "a"]], [["~", "a", 1]],
    [[1, 2], ["#", 5, 1]], [[1, 2], ["#", "a", 1]], [["?", 1]], [["=", 1, 2]], [[]],
    [{"a": {"b": 1}}, ["~", "a", ["#", 0, 1]]]])
def test_a_column_of_another_shape_is_refused(encoded):
    with pytest.raises((ValueError, KeyError, IndexError, TypeError)):
        decode_column(encoded)
