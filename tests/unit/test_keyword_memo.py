"""steps/keyword_memo.py: a remembered result is given only to a header that
reads the same, keyword for keyword, value and type."""

from __future__ import annotations

from calstream.steps.keyword_memo import ByKeywordsRead


def _memo():
    calls = []

    def compute(header, scale):
        calls.append(header.get("KIND"))
        if header.get("KIND") == "A":
            return ("a", repr(header.get("X")), type(header.get("X")).__name__, scale)
        return ("other", header.get("Y"), scale)

    return ByKeywordsRead(compute, first="KIND"), calls


def test_same_keywords_read_same_result_without_computing_again():
    memo, calls = _memo()
    first = memo({"KIND": "A", "X": 1, "Y": "ignored"}, 2)
    again = memo({"KIND": "A", "X": 1, "Y": "other value"}, 2)
    assert first == again == ("a", "1", "int", 2)
    assert len(calls) == 1


def test_equal_values_of_other_types_are_computed_again():
    memo, calls = _memo()
    results = [memo({"KIND": "A", "X": x}, 1) for x in (1, 1.0, True, 0.0, -0.0, 0, False)]
    assert [r[1:3] for r in results] == [("1", "int"), ("1.0", "float"), ("True", "bool"),
                                         ("0.0", "float"), ("-0.0", "float"), ("0", "int"),
                                         ("False", "bool")]
    # and each, asked again, gives its own answer (not the last one kept)
    assert memo({"KIND": "A", "X": -0.0}, 1)[1] == "-0.0"
    assert memo({"KIND": "A", "X": 0.0}, 1)[1] == "0.0"
    assert memo({"KIND": "A", "X": 1.0}, 1)[1:3] == ("1.0", "float")


def test_context_and_path_are_part_of_the_key():
    memo, calls = _memo()
    assert memo({"KIND": "A", "X": 3}, 1)[3] == 1
    assert memo({"KIND": "A", "X": 3}, 2)[3] == 2
    assert memo({"KIND": "B", "X": 3, "Y": "y1"}, 1) == ("other", "y1", 1)
    assert memo({"KIND": "B", "X": 3, "Y": "y2"}, 1) == ("other", "y2", 1)
    assert memo({"KIND": "B", "X": 4, "Y": "y1"}, 1) == ("other", "y1", 1)
    assert len(calls) == 4  # the last one read only KIND and Y


def test_absent_keyword_differs_from_none_free_values_and_unhashables_compute():
    memo, calls = _memo()
    assert memo({"KIND": "B"}, 1) == ("other", None, 1)
    assert memo({"KIND": "B", "Y": "z"}, 1) == ("other", "z", 1)
    assert memo({"KIND": "B", "Y": ["a"]}, 1) == ("other", ["a"], 1)
    assert memo({"KIND": "B", "Y": ["b"]}, 1) == ("other", ["b"], 1)


def test_an_unhashable_value_leaves_no_path_behind():
    memo, calls = _memo()
    memo({"KIND": "B", "Y": ["a"]}, 1)
    assert memo._paths.get(((1,), str, "B"), ()) == ()


def test_same_scalars_reads_as_a_check_reads():
    from calstream.steps.keyword_memo import same_scalars

    header = {"A": 1, "B": "x", "C": 0.0, "D": None, "E": False}
    assert same_scalars(header, dict(header))
    assert not same_scalars(header, {**header, "A": True})
    assert not same_scalars(header, {**header, "A": 1.0})
    assert not same_scalars(header, {**header, "C": -0.0})
    assert not same_scalars(header, {**header, "E": 0})
    assert not same_scalars(header, {**header, "F": 1})
    assert not same_scalars(header, dict(reversed(header.items())))  # another order
    assert not same_scalars({"A": 1, "B": True}, {"B": 1, "A": True})
