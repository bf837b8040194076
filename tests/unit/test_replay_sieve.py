"""A replay judges each record of its source as it reads it
(deciders/replay_sieve.py): it chooses what the whole list chose, and holds
only the latest record of each item its selection takes.

Before session 44 the scan held every record of the topic, decoded, until
it ended: 412 MiB at 100,000 arrivals whatever the selection
(bench/replay_scan_memory.py).
"""

from __future__ import annotations

import os
import random
from collections import namedtuple

from calstream.daemon.deciders.replay_selection import (
    Candidate,
    Selection,
    from_their_roots,
    select,
)
from calstream.daemon.deciders.replay_sieve import ScanSieve
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER
from calstream.topics import contract

Record = namedtuple("Record", "partition offset timestamp value")
ROOTS = {"inbox_roots": ["/inbox"], "products_root": "/products"}


def _arrival(program: str, exposure: int, digest: int, **fields) -> dict:
    eid = f"jw{program}001001_02101_{exposure:05d}_nrcb1"
    d = "sha256:" + f"{digest:064x}"
    body = dict(exposure_id=eid, path=f"/inbox/{eid}_uncal.fits", digest=d, size=100,
                detected_at="2026-12-01T00:00:00.000Z", source="watch", priority="live",
                header={**SMALL_UNCAL_HEADER, "PROGRAM": program})
    body.update(fields)
    return contract.build("arrival", contract.event_id("arrival", eid, d), **body).body


def _topic(n: int = 600, seed: int = 7) -> list[Record]:
    """Arrivals of 3 programs over 3 partitions, with what a source topic
    also holds: corrected redeliveries (the same exposure, later), the same
    event again, replayed ones, files outside the inbox, and garbage."""
    rng = random.Random(seed)
    bodies = []
    for i in range(n):
        program = f"0{1234 + i % 3}"
        kind = rng.random()
        if kind < 0.1 and bodies:
            bodies.append(rng.choice(bodies))  # the same event again
            continue
        body = _arrival(program, rng.randrange(1, 60), i)  # ~60 exposures: redeliveries
        if kind < 0.15:
            body = {**body, "priority": "replay"}  # no source: replayed
        elif kind < 0.2:
            body = {**body, "path": body["path"].replace("/inbox/", "/elsewhere/")}
        bodies.append(body)
    # Keyed by exposure, as the watcher sends them: an exposure's records
    # (and the same event again) in one partition, in the order sent; the
    # partitions read interleaved, as fetches return them.
    records, offsets = [], [0, 0, 0]
    for i, body in enumerate(bodies):
        value = b"{not json" if i % 50 == 49 else contract.encode(contract.Message(
            "arrival", body))
        partition = int(body["exposure_id"].split("_")[2]) % 3
        records.append(Record(partition, offsets[partition],
                              1_764_547_200_000 + rng.randrange(10**6), value))
        offsets[partition] += 1
    return records


def _as_before(records: list[Record], selection: Selection):
    """What the replay chose from the whole list (operations/replay.py
    until session 44)."""
    found = []
    for r in records:
        try:
            message = contract.decode(r.value)
        except contract.InvalidMessage:
            continue
        found.append(Candidate(r.partition, r.offset, r.timestamp, message.body))
    of_kind, outside = from_their_roots(
        [c for c in found if c.message.get("schema") == "calstream.arrival"], **ROOTS)
    names = {c.message.get("exposure_id") for c in of_kind
             if not c.message.get("replay") and c.message.get("priority") != "replay"}
    return select(of_kind, selection), outside, names, len(found)


def test_the_sieve_chooses_what_the_whole_list_chose():
    records = _topic()
    for selection in (Selection(), Selection(programs={"01235"}),
                      Selection(exposures={"jw01234001001_02101_00007_nrcb1"})):
        sieve = ScanSieve("arrival", selection, ROOTS)
        for r in records:
            sieve.take(r)
        (chosen, matched, superseded), outside, names, scanned = _as_before(records, selection)
        assert sieve.chooser.result() == (chosen, matched, superseded), selection
        assert (sieve.outside, sieve.on_topic, sieve.scanned) == (outside, names, scanned)
        assert sieve.invalid == len(records) - scanned
        assert superseded > 0 or selection.exposures  # redeliveries were superseded


def test_the_sieve_holds_only_the_latest_record_of_each_item_it_takes():
    records = _topic()
    sieve = ScanSieve("arrival", Selection(programs={"01235"}), ROOTS)
    for r in records:
        sieve.take(r)
    held = list(sieve.chooser.latest.values())
    assert held and all(c.message["exposure_id"].startswith("jw01235") for c in held)
    assert len({c.message["exposure_id"] for c in held}) == len(held) < len(records) / 6
    # Its first offset and time per partition, as the scan kept them.
    assert sorted(sieve.scans) == [0, 1, 2]
    assert all(s.first_offset == 0 and s.first_time is not None for s in sieve.scans.values())


def _arrivals_of_a_file(tmp_path):
    """A real uncal file in an inbox, and its arrival as the watcher would
    announce it now (``forged`` fields: one of the same exposure that
    anyone who may write ``raw`` could send)."""
    from calstream.steps.exposure import describe_exposure
    from calstream.steps.fitsfile import file_digest

    from .test_exposure import write

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = write(inbox)

    def arrival(detected_at: str = "2026-12-01T00:00:00.000Z", **forged) -> dict:
        info = describe_exposure(path)
        body = dict(exposure_id=info.exposure_id, path=str(path), digest=file_digest(path),
                    size=path.stat().st_size, detected_at=detected_at, source="watch",
                    priority="live", header=info.header)
        eid = forged.pop("event_id", None)
        body.update(forged)
        eid = eid or contract.event_id("arrival", info.exposure_id, body["digest"],
                                       str(sorted(forged.items())), detected_at)
        return contract.build("arrival", eid, **body).body
    return inbox, path, arrival


def _chosen(inbox, bodies: list[dict]) -> list[dict]:
    from calstream.daemon.doers.replay_source import arrival_judge

    roots = {"inbox_roots": [str(inbox)], "products_root": "/products"}
    sieve = ScanSieve("arrival", Selection(), roots, judge=arrival_judge([str(inbox)]))
    for offset, body in enumerate(bodies):
        sieve.take(Record(0, offset, 1_764_547_200_000 + offset,
                          contract.encode(contract.Message("arrival", body))))
    return [c.message for c in sieve.chooser.result()[0]]


def test_a_forged_later_arrival_does_not_replace_the_file_s_own(tmp_path):
    """Of an exposure's arrivals on raw, the latest was replayed: a forged
    later one (other bytes, another path, a header copy or size that is not
    the file's) went out in the real one's place, for detector1 to call it
    stale or dead-letter it, and the exposure was never replayed. The file
    decides now: its own arrival is replayed, whatever comes after it."""
    inbox, path, arrival = _arrivals_of_a_file(tmp_path)
    real = arrival()
    forgeries = [arrival(digest="sha256:" + "f" * 64),
                 arrival(path=str(inbox / "sub" / path.name)),
                 arrival(header={**real["header"], "EXP_TYPE": "NRC_TACQ"}),
                 arrival(size=real["size"] + 2880)]
    for forged in forgeries:
        assert _chosen(inbox, [real, forged]) == [real], forged
    assert _chosen(inbox, [real, *forgeries]) == [real]
    # A FIFO named as the file, in the inbox: never opened (a read would wait for ever).
    (inbox / "fifo").mkdir()
    os.mkfifo(inbox / "fifo" / path.name)
    fifo = arrival(path=str(inbox / "fifo" / path.name))
    assert _chosen(inbox, [real, fifo]) == [real] and _chosen(inbox, [fifo, real]) == [real]
    # A forged copy sent first under the real one's event id: the real one,
    # when it comes, is no redelivery of it.
    first = arrival(digest="sha256:" + "e" * 64, event_id=real["event_id"])
    assert _chosen(inbox, [first, real]) == [real]


def test_a_corrected_redelivery_is_still_replayed_in_place_of_the_first(tmp_path):
    """The file replaced (a corrected redelivery, with an arrival of its
    own): the later arrival is the file's, and taken, as before; records
    that claim the same are taken by time, the file unread."""
    from .test_exposure import write

    inbox, path, arrival = _arrivals_of_a_file(tmp_path)
    first = arrival()
    write(inbox, EFFEXPTM=42.0)  # the same name, other bytes
    corrected = arrival("2026-12-02T00:00:00.000Z")
    assert corrected["digest"] != first["digest"]
    assert _chosen(inbox, [first, corrected]) == [corrected]
    assert _chosen(inbox, [corrected, first]) == [corrected]  # the file's, not the later
    again = arrival("2026-12-03T00:00:00.000Z")
    assert _chosen(inbox, [corrected, again]) == [again]  # the same claims: by time


def test_a_replay_of_everything_holds_its_arrivals_packed():
    """A replay chooses once its whole source is read, so it holds every
    arrival it will republish until then: decoded, some 3.7 KB each (the
    door's header copy), and each republished message was built before the
    first was sent, 1.5 KB more. A mission's exposures (from the product
    store's records) could not be replayed at once. A chosen arrival is
    held as its JSON now (replay_packed.py), about 1 KB, and read back as
    the body it was."""
    import gc
    import tracemalloc

    from calstream.steps.naming import parse_exposure_name
    from calstream.steps.synthetic.headers import synthetic_header

    header = {**SMALL_UNCAL_HEADER, **synthetic_header("NIRCAM", "NRC_IMAGE")}
    records = []
    for i in range(3000):
        eid = f"jw01234{i // 99999 + 1:03d}001_02101_{i % 99999 + 1:05d}_nrcb1"
        d = "sha256:" + f"{i:064x}"
        body = dict(exposure_id=eid, path=f"/inbox/{eid}_uncal.fits", digest=d, size=100,
                    detected_at="2026-12-01T00:00:00.000Z", source="watch", priority="live",
                    header={**header, "EXPOSURE": f"{i % 99999 + 1:05d}"})
        records.append(Record(i % 3, i // 3, 1_764_547_200_000 + i, contract.encode(
            contract.build("arrival", contract.event_id("arrival", eid, d), **body))))
    gc.collect()
    tracemalloc.start()
    try:
        sieve = ScanSieve("arrival", Selection(), ROOTS)
        for r in records:
            sieve.take(r)
        chosen = sieve.chooser.result()[0]
        parse_exposure_name.cache_clear()  # bounded (65,536 names), not the replay's
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(chosen) == len(records)
    assert held < len(records) * 2000, f"{held / len(records):.0f} bytes an arrival"
    first = contract.decode(records[0].value).body
    assert dict(chosen[0].message) == first and chosen[0].message["header"] == first["header"]
