"""Whether a partition still holds a record at its place, from one fetch's
answer (deciders/record_places.py): lost beyond the end, expired before
the beginning, and "ask again" while nothing tells yet."""

from calstream.daemon.deciders.record_places import EXPIRED, FOUND, GONE, place_verdict


def test_the_first_record_read_says_where_the_place_lies():
    assert place_verdict(5, first=5, high=9, position=6) == FOUND
    # Asked beyond the end, the client started at the beginning: lost.
    assert place_verdict(5, first=0, high=2, position=1) == GONE
    # Asked before the beginning (retention removed it): the first left is later.
    assert place_verdict(5, first=7, high=9, position=8) == EXPIRED


def test_with_no_record_the_watermark_tells():
    assert place_verdict(5, first=None, high=None, position=None) is None  # no answer yet
    assert place_verdict(5, first=None, high=5, position=5) == GONE  # ends right before it
    assert place_verdict(0, first=None, high=0, position=0) == GONE  # an empty partition
    assert place_verdict(5, first=None, high=9, position=5) is None  # there, not fetched yet
    # Everything removed by retention: the client stands at the end, beyond the place.
    assert place_verdict(5, first=None, high=9, position=9) == EXPIRED
