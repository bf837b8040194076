"""Where the originals' topics are read for redrive marks, and what is kept
between two console rebuilds (no broker): each rebuild read every original
topic end to end (months of ``products``), every ~5 s while a page was open."""

from __future__ import annotations

from calstream.daemon.deciders.redrive_reading import lowest_originals, pinned_partition, starts
from calstream.daemon.operations.dead_letter_redrives import RedriveNotes

TOPICS = {"p.products", "p.raw"}


def letter(event_id, topic="p.products", partition=0, offset=0):
    return {"event_id": event_id,
            "original": {"topic": topic, "partition": partition, "offset": offset}}


def test_each_partition_is_read_from_the_lowest_original_on_it():
    letters = [letter("a", offset=90), letter("b", offset=40), letter("c", partition=2,
                                                                       offset=7),
               letter("d", topic="p.raw", offset=3)]
    assert lowest_originals(letters, TOPICS) == {("p.products", 0): 40, ("p.products", 2): 7,
                                                 ("p.raw", 0): 3}


def test_a_letter_without_a_usable_original_names_no_place():
    """A dead letter is untrusted: a file's has no original, a forged one any shape."""
    letters = [{"event_id": "f", "original": None}, {"event_id": "g"},
               letter("h", topic="elsewhere"), letter("i", partition=-1),
               letter("j", offset="12"), letter("k", offset=True), {"original": [1]}]
    assert lowest_originals(letters, TOPICS) == {}


def test_a_second_read_starts_where_the_first_ended():
    needed = {("t", 0): 40, ("t", 1): 5}
    assert starts(needed, {}, {("t", 0): 1000, ("t", 1): 60}) == {("t", 0): 1000, ("t", 1): 60}


def test_a_place_never_read_starts_at_its_lowest_original():
    assert starts({("t", 0): 40, ("t", 3): 9}, {("t", 3): 9}, {("t", 0): 1000}) == {
        ("t", 0): 1000, ("t", 3): 9}


def test_a_new_letter_below_what_was_read_reads_the_gap_again():
    """Its marks read before it was listed were not kept (only listed letters' are)."""
    assert starts({("t", 0): 40}, {("t", 0): 500}, {("t", 0): 1000}) == {("t", 0): 500}
    assert starts({("t", 0): 40}, {("t", 0): 2000}, {("t", 0): 1000}) == {("t", 0): 1000}


def test_a_place_no_letter_names_any_more_is_not_read():
    assert starts({("t", 0): 40}, {}, {("t", 0): 1000, ("t", 1): 77}) == {("t", 0): 1000}


def test_only_the_marks_of_letters_still_listed_are_kept():
    notes = RedriveNotes()
    notes.add({"dead_letter": "a", "at": "1", "by": "x", "reason": "r"})
    notes.add({"dead_letter": "b", "at": "2", "by": "x", "reason": "r"})
    notes.keep_only({"b", "c"})
    assert notes.of("a") == () and len(notes.of("b")) == 1


def test_a_redrive_goes_back_to_its_originals_partition_when_the_topic_has_it():
    assert pinned_partition({"partition": 3}, {0, 1, 2, 3}) == 3
    assert pinned_partition({"partition": 7}, {0, 1, 2, 3}) is None  # recreated smaller, forged
    assert pinned_partition({"partition": "3"}, {0, 1, 2, 3}) is None
    assert pinned_partition({"partition": True}, {0, 1}) is None
    assert pinned_partition({}, {0, 1}) is None
    assert pinned_partition({"partition": 0}, None) is None  # the topic's partitions unknown


def test_a_redrive_sends_only_the_record_its_topic_held_at_the_letter_s_place():
    """What a letter carries is anyone's word: it goes out as its original
    only when the record at the place it names is that original."""
    from types import SimpleNamespace

    from calstream.daemon.deciders.record_places import EXPIRED, GONE
    from calstream.daemon.deciders.redrive_reading import original_place, unproven_original
    from calstream.topics.dead_letters import original_record

    original = original_record(topic="p.raw", partition=1, offset=5, key=b"k", value=b"{}",
                               timestamp_ms=None)
    assert original_place(original) == ("p.raw", 1, 5)
    held = SimpleNamespace(key=b"k", value=b"{}")
    assert unproven_original(original, held) is None
    for found, why in ((SimpleNamespace(key=b"k", value=b'{"other": 1}'), "is not the original"),
                       (SimpleNamespace(key=b"other", value=b"{}"), "is not the original"),
                       (GONE, "no longer holds its original"),
                       (EXPIRED, "fell out of the topic's retention")):
        assert why in unproven_original(original, found), found
    for no_place in ({**original, "offset": None}, {**original, "partition": "1"},
                     {**original, "topic": 7}, None, []):
        assert original_place(no_place) is None
        assert "names no place" in unproven_original(no_place, held)
