"""The restore's reads of its topics: what came after the state's positions.

Each read is whole or not at all (planner_clients.TailReads): a broker
that stops answering or goes away during it is waited for, and the read
made again from the same positions, so the restore never goes on with part
of a topic's tail.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from calstream.daemon.doers import planner_clients

if TYPE_CHECKING:
    from calstream.daemon.doers.planner_loop import Planner

log = logging.getLogger("calstream.planner")


async def read_topic(planner: Planner, reads: planner_clients.TailReads, logical: str):
    """The records of a topic after what the state covers, remembering how far."""
    records, partitions, lost = await reads.read([planner.topics.name(logical)])
    warn_lost(lost)
    # Read from a snapshot's offsets and nothing lost: the broker still
    # has every record before them too.
    planner.tail_only[logical] = bool(partitions) and not lost and any(
        planner.positions.get((tp.topic, tp.partition)) for tp in partitions)
    for record in records:
        planner.positions[(record.topic, record.partition)] = record.offset + 1
    return records


def warn_lost(lost) -> None:
    for tp in lost:
        log.warning("planner: %s[%d] is shorter than the snapshot says: the broker lost its "
                    "records; read again from its beginning (decisions kept: what was "
                    "decided is recognised when it comes again)", tp.topic, tp.partition)
