"""A planner snapshot's offsets are places on the broker it was taken on.

On a broker started again empty and filled again (the embedded broker keeps
its topics in memory; the product store's events re-published, in another
order and without the failures and duplicates the old topic had), a
partition can be as long as the snapshot's offset or longer while its
records before that offset are not the ones the snapshot decided. Before,
only a partition shorter than the offset was read again from its
beginning: a longer one was read from the offset, and the product events
before it that the snapshot never saw were never decided (their exposures
never ordered). Now the snapshot notes each partition's last record read,
and a partition whose record there is another is read again whole, the
snapshot's decisions kept.
"""

from __future__ import annotations

import pytest

from calstream.daemon.doers import kafka, planner_restore
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.planner_snapshots import snapshot_path
from calstream.topics.catalog import Topics

from .support import daemon_config, running_daemon, until, wait_for
from .test_planner_ha import product_event, publish, stage2_orders

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(150)]


async def test_a_partition_refilled_past_the_snapshot_s_offset_is_read_again_whole(
        tmp_path, unique_prefix, monkeypatch):
    monkeypatch.setattr(planner_restore, "SNAPSHOT_EVERY_RECORDS", 1)  # after each fetch
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix, roles=["planner"])
        events = [product_event(cfg.products, cfg.inbox, 1, n, 4) for n in range(1, 5)]
        # The old topic: exposure 1 announced twice (a re-sent event), then 2.
        first = [events[0], events[0], events[1]]
        async with running_daemon(cfg) as daemon:
            await publish(cfg, first)
            await wait_for(cfg, ["work.stage2"], lambda ms: len(stage2_orders(ms)) >= 2, 60)
            await until(lambda: daemon.planner.records_seen == len(first)
                        and daemon.planner.snapshot_written == len(first))
        assert snapshot_path(cfg.work_dir).exists()

        own.restart()  # empty: a new broker on the same address
        await kafka.create_topics(cfg, Topics(cfg.topic_prefix))
        # Refilled once each, then two new exposures: 4 records, past the offset 3.
        await publish(cfg, events)
        new = {events[2]["exposure_id"], events[3]["exposure_id"]}
        async with running_daemon(cfg) as daemon:
            await until(lambda: daemon.planner is not None and daemon.planner.caught_up)
            assert daemon.planner.restored_from is not None  # the snapshot was used
            # Exposure 3 lies at offset 2 of the new partition, before the offset.
            await wait_for(cfg, ["work.stage2"], lambda ms: new <= {
                o["exposure_id"] for o in stage2_orders(ms)}, 60)
