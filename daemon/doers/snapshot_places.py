"""Whether a snapshot's offsets are still places on the broker it was taken on.

A snapshot records, per partition, the next offset to read, and the
restore reads each partition on from there. A partition shorter than that
offset was lost (TopicReader.lost: read again from its beginning). But a
broker started again empty and filled again -- the embedded one keeps its
topics in memory, and the product store's events are re-published at start
in another order, without the failures and duplicates the old topic had --
can have a partition as long as the offset or longer whose records before
it are not those the snapshot decided: read on from the offset, the
product events before it that the snapshot never saw were never decided.
So the snapshot also notes the fingerprint of the last record read in each
partition (``covered``), and the restore reads each such record again: a
partition where another record lies there is read again from its
beginning, the snapshot's decisions kept (docs/design.md says why that is
safe, as for a lost partition). A record gone by retention, or one that
could not be read when the snapshot was taken, proves nothing: trusted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from calstream.daemon.doers import kafka, planner_clients
from calstream.daemon.doers.planner_snapshots import fingerprint
from calstream.daemon.doers.start_waits import broker_cause

if TYPE_CHECKING:
    from calstream.daemon.doers.planner_loop import Planner

log = logging.getLogger("calstream.planner")


def _places(offsets: dict[tuple[str, int], int]) -> list[tuple[str, int, int]]:
    return [(t, p, o - 1) for (t, p), o in sorted(offsets.items()) if o > 0]


async def covered_now(planner: Planner, offsets: dict[tuple[str, int], int]
                      ) -> dict[tuple[str, int], str]:
    """The fingerprint of the record before each offset, as the broker has
    it now (for the snapshot being written); none when the broker does not
    answer (the snapshot is still written: its offsets are then trusted), or
    for a planner with no broker (a tool's, a benchmark's)."""
    if not planner.cfg.kafka_bootstrap:
        return {}
    try:
        found = await kafka.records_at(planner.cfg, _places(offsets))
    except Exception as exc:  # noqa: BLE001 - a broker fault: the snapshot goes on without
        # broker_cause, not broker_fault alone: a broker stopped just then
        # answers aiokafka's bare "Unable to get cluster metadata" KafkaError,
        # which raised out of the snapshot and ended the planner's task.
        if broker_cause(exc) is None:
            raise
        log.info("planner: the records the snapshot covers could not be read (%s): its "
                 "offsets will be trusted as they are", exc)
        return {}
    return {(t, p): fingerprint(r.value) for (t, p, _), r in found.items()
            if not isinstance(r, str)}


async def read_again_where_moved(planner: Planner, covered: dict[tuple[str, int], str]) -> None:
    """Forget the restored position of each partition whose record before
    it is not the one the snapshot covered: read again from its beginning."""
    places = [place for place in _places(planner.positions) if place[:2] in covered]
    if not places:
        return

    async def attempt():
        return await kafka.records_at(planner.cfg, places)
    found = await planner_clients.waits_of(planner).step(
        planner_clients.waited_broker(planner.cfg, "topic reader"), attempt, broker_cause,
        owner=planner_clients.PLANNER)
    for (topic, partition, offset), record in found.items():
        if isinstance(record, str):  # GONE: shorter, TopicReader.lost; EXPIRED: retention
            continue
        if fingerprint(record.value) != covered[topic, partition]:
            del planner.positions[topic, partition]
            log.warning("planner: %s[%d] holds another record at offset %d than the snapshot "
                        "read there (a broker started again and filled again, or another "
                        "broker): read again from its beginning (decisions kept: what was "
                        "decided is recognised when it comes again)", topic, partition, offset)
