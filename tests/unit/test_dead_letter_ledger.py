"""The dead letters a daemon sent, kept on its disk for a broker that loses
them (doers/dead_letter_ledger.py): read back, one a dead letter, bounded,
and never written outside the ledger."""

from __future__ import annotations

import json
import os

from aiokafka.structs import ConsumerRecord

from calstream.daemon.doers.dead_letter_ledger import DeadLetterLedger
from calstream.topics import contract, dead_letters


def letter(n: int) -> dict:
    return contract.build(
        "dead_letter", contract.event_id("dead_letter", "watcher", "bad_file", n),
        category="bad_file", reason=f"not a FITS file ({n})", stage="watcher", attempts=0,
        original=None, path=f"/inbox/file{n}.fits").body


def test_a_kept_dead_letter_is_read_back_once_however_often_it_is_kept(tmp_path):
    ledger = DeadLetterLedger(tmp_path)
    first, second = letter(1), letter(2)
    assert ledger.keep_letter(first) and ledger.keep_letter(second)
    assert ledger.keep_letter(first)  # sent again (a retry): the same record
    assert sorted(b["event_id"] for b in ledger.letters()) == sorted(
        [first["event_id"], second["event_id"]])
    assert (tmp_path / "deadletters" / "deadletter" / f"{first['event_id']}.json").is_file()


def test_past_its_capacity_the_oldest_are_removed(tmp_path):
    ledger = DeadLetterLedger(tmp_path, capacity=10)
    letters = [letter(n) for n in range(11)]
    for body in letters[:10]:
        assert ledger.keep_letter(body)
    directory = tmp_path / "deadletters" / "deadletter"
    for age, body in enumerate(letters[:10]):  # letter 0 the oldest, a second apart
        os.utime(directory / f"{body['event_id']}.json", (1_000_000 + age, 1_000_000 + age))
    assert len(ledger.letters()) == 10  # at capacity, nothing removed
    assert ledger.keep_letter(letters[10])  # one more: down to nine tenths
    assert {b["event_id"] for b in ledger.letters()} == {b["event_id"] for b in letters[2:]}


def test_an_event_id_that_would_make_a_path_is_refused_and_nothing_is_written(tmp_path):
    ledger = DeadLetterLedger(tmp_path / "work")
    forged = dict(letter(1), event_id="../../outside")
    assert not ledger.keep_letter(forged)
    assert not ledger.keep_letter(dict(letter(1), event_id=["a", "list"]))
    assert not ledger.keep_letter({"category": "bad_file"})  # no event id at all
    assert not (tmp_path / "outside.json").exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []
    assert ledger.letters() == []


def test_a_file_that_is_no_record_of_its_name_is_left_out(tmp_path):
    ledger = DeadLetterLedger(tmp_path)
    body = letter(1)
    assert ledger.keep_letter(body)
    directory = tmp_path / "deadletters" / "deadletter"
    (directory / "ab12.json").write_text('{"event_id": "another"}')  # not its file's key
    (directory / "cd34.json").write_text("{torn")
    assert [b["event_id"] for b in ledger.letters()] == [body["event_id"]]


def test_a_ledger_that_cannot_remove_its_oldest_still_keeps_and_never_raises(tmp_path,
                                                                           monkeypatch):
    ledger = DeadLetterLedger(tmp_path, capacity=2)
    for n in range(2):
        assert ledger.keep_letter(letter(n))

    def refused(calls):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(ledger, "_prune_step", refused)  # a directory someone made read-only
    assert ledger.keep_letter(letter(2))  # over capacity: the removal fails, the send goes on
    monkeypatch.undo()
    assert len(ledger.letters()) == 3
    assert ledger.keep_letter(letter(3))  # the next one removes them after all
    assert len(ledger.letters()) == 1


def test_the_place_noted_is_read_back_and_the_last_note_wins(tmp_path):
    ledger = DeadLetterLedger(tmp_path)
    assert ledger.newest_place() is None  # none noted yet: judged by the topic being empty
    ledger.note_place("e1", "calstream.deadletter", 0, 7)
    ledger.note_place("e2", "calstream.deadletter", 2, 8)
    assert ledger.newest_place() == {"event_id": "e2", "topic": "calstream.deadletter",
                                     "partition": 2, "offset": 8}
    assert ledger.letters() == []  # a note is no dead letter


def test_a_place_file_that_is_no_place_is_judged_as_none(tmp_path, caplog):
    ledger = DeadLetterLedger(tmp_path)
    ledger.note_place("e1", "t", 0, 1)
    path = tmp_path / "deadletters" / "newest-place.json"
    for content in (b"not json{", b"[]", b'{"event_id": "e", "topic": "t", "partition": 0}',
                    b'{"event_id": "e", "topic": "t", "partition": true, "offset": 1}',
                    b'{"event_id": "e", "topic": "t", "partition": 0, "offset": -1}',
                    b'{"event_id": "e", "topic": "t", "partition": 0, "offset": 1.5}',
                    b'{"event_id": 5, "topic": "t", "partition": 0, "offset": 1}',
                    b'{"event_id": "e", "topic": "t", "partition": 0, "offset": '
                    + str(2 ** 63).encode() + b"}"):
        path.write_bytes(content)
        assert ledger.newest_place() is None, content
    path.unlink()
    path.mkdir()  # no regular file: not read, and the next note is written all the same
    assert ledger.newest_place() is None
    ledger.note_place("e3", "t", 0, 2)
    assert ledger.newest_place()["event_id"] == "e3"


def test_a_place_that_cannot_be_written_is_warned_about_and_never_raises(tmp_path, caplog,
                                                                         monkeypatch):
    from calstream.daemon.doers import noted_places

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    ledger = DeadLetterLedger(tmp_path)
    monkeypatch.setattr(noted_places, "write_json_atomically", full_disk)
    ledger.note_place("e1", "t", 0, 1)  # no exception: the send goes on
    assert ledger.newest_place() is None
    assert "not noted" in caplog.text and "No space left" in caplog.text


def mark(letter_id: str, reason: str = "cache resynced", **more) -> tuple[str, bytes]:
    note = {"by": "ops", "reason": reason, "dead_letter": letter_id, "dead_letter_ref": "0:3",
            "at": "2026-12-01T10:00:00.000Z", **more}
    return "calstream-redrive", json.dumps(note).encode()


def letter_of_a_record(n: int) -> dict:
    """The dead letter of raw[0]@n, key ``junk``, value ``not json (n)``."""
    original = dead_letters.original_record(topic="cs.raw", partition=0, offset=n, key=b"junk",
                                            value=f"not json ({n})".encode(), timestamp_ms=1)
    return contract.build(
        "dead_letter", contract.event_id("dead_letter", "detector1", "invalid_message", n),
        category="invalid_message", reason="not JSON", stage="detector1", attempts=0,
        original=original).body


def record(headers, topic: str = "cs.raw", key: bytes | None = b"junk",
           value: bytes | None = b"not json (1)") -> ConsumerRecord:
    """A record consumed (the broker's own structure, as a consumer gets it)."""
    return ConsumerRecord(topic, 0, 9, 0, 0, key, value, None, len(value or b""),
                          len(key or b""), tuple(headers))


def test_a_redrive_of_a_letter_kept_here_is_kept_once_and_goes_with_it(tmp_path):
    ledger = DeadLetterLedger(tmp_path, capacity=3)
    mine = letter_of_a_record(1)
    assert ledger.keep_letter(mine)
    headers = [("other", b"x"), mark(mine["event_id"], extra=["not text"])]
    assert ledger.keep_redrives(record(headers)) == 1
    assert ledger.keep_redrives(record(headers)) == 0  # the same record read again: no second note
    assert ledger.keep_redrives(record([mark(mine["event_id"], "again")])) == 1
    [first, second] = ledger.redrives()[mine["event_id"]]
    assert first == {"by": "ops", "reason": "cache resynced", "dead_letter": mine["event_id"],
                     "dead_letter_ref": "0:3", "at": "2026-12-01T10:00:00.000Z"}
    assert second["reason"] == "again"
    # Pruned with its letter: no redrive outlives what it marks.
    for n in (2, 3):
        assert ledger.keep_letter(letter(n))
    os.utime(tmp_path / "deadletters" / "deadletter" / f"{mine['event_id']}.json",
             (1_000_000, 1_000_000))  # the oldest
    assert ledger.keep_letter(letter(4))  # over capacity: the oldest removed
    assert mine["event_id"] not in {b["event_id"] for b in ledger.letters()}
    assert ledger.redrives() == {}


def test_a_redrive_of_no_letter_kept_here_or_no_redrive_is_not_kept(tmp_path):
    """Headers are anyone's: a mark naming a dead letter this daemon does not
    keep (another daemon's, a forger's flood of ids) writes nothing."""
    ledger = DeadLetterLedger(tmp_path)
    assert ledger.keep_letter(letter_of_a_record(1))
    for headers in ([mark("0" * 64)], [mark("../../etc/passwd")],
                    [("calstream-redrive", b"[1, 2]")], [("calstream-redrive", b"\xff")],
                    [("calstream-redrive", json.dumps({"dead_letter": 7}).encode())]):
        assert ledger.keep_redrives(record(headers)) == 0, headers
    assert not (tmp_path / "deadletters" / "redrives").exists()


def test_a_mark_on_a_record_that_is_not_the_letters_original_is_not_kept(tmp_path, caplog):
    """A forger who may write the topic puts a mark naming a real dead letter
    on a record of their own: not kept (it would hide the letter from
    ``list --pending`` once put back), however near the original it is."""
    ledger = DeadLetterLedger(tmp_path)
    mine, a_file = letter_of_a_record(1), letter(2)
    assert ledger.keep_letter(mine) and ledger.keep_letter(a_file)
    forged = [mark(mine["event_id"])]
    for other in (record(forged, value=b"something else"), record(forged, key=b"other"),
                  record(forged, key=None), record(forged, value=None),
                  record(forged, topic="cs.stage2")):
        assert ledger.keep_redrives(other) == 0, other
    # A dead letter of a file carries no record: no record is its original.
    assert ledger.keep_redrives(record([mark(a_file["event_id"])])) == 0
    assert not (tmp_path / "deadletters" / "redrives").exists()
    assert "is not its original: not kept" in caplog.text


def test_whether_a_record_is_a_letters_own_original():
    """The judging itself (topics/dead_letters.py): the digest kept, or for a
    letter from before contract 1.2 (no ``value_sha256``), the value it
    carries whole; never a digest derived from a part, nor a malformed one."""
    own = dead_letters.is_own_original
    original = letter_of_a_record(1)["original"]
    assert own(original, "cs.raw", b"junk", b"not json (1)")
    assert not own(original, "cs.raw", b"junk", b"not json (2)")
    assert not own(original, "cs.raw", b"junk2", b"not json (1)")
    assert not own(original, "cs.other", b"junk", b"not json (1)")
    old = {k: v for k, v in original.items()
           if k not in ("value_sha256", "value_size", "value_truncated")}
    assert own(old, "cs.raw", b"junk", b"not json (1)")
    assert not own(old, "cs.raw", b"junk", b"not json (2)")
    binary = dead_letters.original_record(topic="t", partition=0, offset=0, key=None,
                                          value=b"\xff\x00", timestamp_ms=None)
    assert own({k: v for k, v in binary.items() if k != "value_sha256"}, "t", None,
               b"\xff\x00")
    assert not own({**original, "value_sha256": "not hex"}, "cs.raw", b"junk",
                   b"not json (1)")
    cut = dead_letters.original_record(topic="t", partition=0, offset=0, key=None,
                                       value=b"x" * 100, timestamp_ms=None, budget=10)
    assert own(cut, "t", None, b"x" * 100)  # re-sent whole from its source
    assert not own({k: v for k, v in cut.items() if k != "value_sha256"}, "t", None,
                   b"x" * 10)  # never judged by the part kept
    long_key = "k" * 1000  # kept cut: the original key, and the key a redrive sends, match
    kept = dead_letters.original_record(topic="t", partition=0, offset=0,
                                        key=long_key.encode(), value=b"v", timestamp_ms=None)
    assert own(kept, "t", long_key.encode(), b"v")
    assert own(kept, "t", kept["key"].encode(), b"v")
    for broken in (None, [], {"topic": "t"}):
        assert not own(broken, "t", None, b"v")


def test_the_removal_of_the_oldest_is_spread_over_the_letters_written(tmp_path, monkeypatch):
    """The removal past capacity was one pass inside one letter's write (in
    a thread timed as a write: Publisher._backed_up): up to 10,000 lstats and
    1,000 unlinks, which a slow mount that answers (a busy NFS server) took
    past the write's time, so that letter was called unkept and every one
    after it was sent without its copy until the pass ended. Now each
    letter's write adds at most PRUNE_CALLS calls to it, and the oldest go
    all the same, a few letters later."""
    from calstream.daemon.doers import dead_letter_ledger

    capacity = 4 * dead_letter_ledger.PRUNE_CALLS
    ledger = DeadLetterLedger(tmp_path, capacity=capacity)
    letters = [letter(n) for n in range(capacity + 40)]
    directory = tmp_path / "deadletters" / "deadletter"
    for age, body in enumerate(letters[:capacity]):
        assert ledger.keep_letter(body)
        os.utime(directory / f"{body['event_id']}.json", ns=(age * 10**9, age * 10**9))
    calls, real_lstat, real_unlink = [], os.lstat, os.unlink

    def lstat(path, *args, **kw):
        calls.append(path)
        return real_lstat(path, *args, **kw)

    def unlink(path, *args, **kw):
        calls.append(path)
        return real_unlink(path, *args, **kw)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "unlink", unlink)
    other = DeadLetterLedger(tmp_path / "other")  # far below its capacity
    assert other.keep_letter(letter(0))
    calls.clear()
    assert other.keep_letter(letter(1))
    own = len(calls)  # a letter's own write (its directory there)
    most, written = 0, capacity
    while written == capacity or getattr(ledger, "_pruning", None):  # until its pass ended
        calls.clear()
        assert ledger.keep_letter(letters[written])  # over capacity: the pass goes on
        written += 1
        most = max(most, len(calls))
    monkeypatch.undo()
    assert own + 1 < most <= own + dead_letter_ledger.PRUNE_CALLS, (own, most)  # main: 161
    kept = {b["event_id"] for b in ledger.letters()}
    during = written - capacity - 1  # letters written after the pass's listing
    assert int(capacity * 0.9) <= len(kept) <= int(capacity * 0.9) + during, len(kept)
    assert 1 < during < 8  # spread over a few letters, not one, nor hundreds
    newest = letters[written - len(kept):written]
    assert kept == {b["event_id"] for b in newest}  # the oldest went, the newest stay
    assert ledger.keep_letter(letters[written])  # counted right: no pass begins at once
    assert ledger._pruning is None and len(ledger.letters()) == len(kept) + 1


def test_a_ledger_found_over_capacity_lists_its_directory_once_in_a_write(tmp_path,
                                                                         monkeypatch):
    """A daemon that starts on a ledger already past its capacity (a lower
    one configured, a copy put back) counted its letters by a listing at its
    first write, and the removal listed them all again in that same write:
    two listings of up to 10,000 names within one timed write."""
    for n in range(12):
        assert DeadLetterLedger(tmp_path).keep_letter(letter(n))
    ledger = DeadLetterLedger(tmp_path, capacity=10)  # as a restarted daemon finds it
    listings, real = [], os.listdir

    def listdir(path="."):
        listings.append(path)
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    assert ledger.keep_letter(letter(12))
    monkeypatch.undo()
    assert len(listings) == 1, listings
    assert len(ledger.letters()) == 9  # and the oldest removed, down to nine tenths


def test_a_letter_kept_again_during_the_removal_of_the_oldest_stays(tmp_path):
    """A letter sent again (a retry: the same record, written anew) while a
    removal of the oldest is under way: that pass had aged its file before,
    old, and removed it a few letters later (since its removal is spread
    over the letters, session 46), so the newest copy of a letter just sent
    was gone from the ledger a broker that loses it is given back from."""
    from calstream.daemon.doers import dead_letter_ledger

    capacity = 4 * dead_letter_ledger.PRUNE_CALLS
    ledger = DeadLetterLedger(tmp_path, capacity=capacity)
    letters = [letter(n) for n in range(capacity + 40)]
    by_name = {f"{b['event_id']}.json": b for b in letters}
    directory = tmp_path / "deadletters" / "deadletter"
    for age, body in enumerate(letters[:capacity]):
        assert ledger.keep_letter(body)
        os.utime(directory / f"{body['event_id']}.json", ns=(age * 10**9, age * 10**9))
    written = capacity
    while ledger._pruning is None or not ledger._pruning.doomed:  # aged: removing
        assert ledger.keep_letter(letters[written])
        written += 1
    again = by_name[ledger._pruning.doomed[0]]  # to be removed, sent again meanwhile
    assert ledger.keep_letter(again)
    while ledger._pruning is not None:
        assert ledger.keep_letter(letters[written])
        written += 1
    assert (directory / f"{again['event_id']}.json").is_file()
    assert again["event_id"] in {b["event_id"] for b in ledger.letters()}
