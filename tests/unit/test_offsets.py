"""Commit positions: never past a record that is not finished."""

from calstream.daemon.doers.kafka.concurrent_consumer import PartitionOffsets


def test_commit_position_stops_at_the_lowest_unfinished_record():
    p = PartitionOffsets()
    assert p.commit_position() is None
    for off in (10, 11, 12):
        p.take(off)
    assert p.commit_position() == 10
    p.pending.discard(11)  # a later record finished first
    assert p.commit_position() == 10
    p.pending.discard(10)
    assert p.commit_position() == 12
    p.pending.discard(12)
    assert p.commit_position() == 13
