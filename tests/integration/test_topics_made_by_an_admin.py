"""A site that denies daemons Create: the catalog's topics are an admin's to
make, and a daemon started before they exist waits for them.

The broker's refusal (TOPIC_AUTHORIZATION_FAILED in the CreateTopics answer)
cannot be had from the embedded tansu, which has no ACLs: the daemon here is
told not to try (``create_topics = false``), which leads to the same wait
(doers/kafka/topic_admin.py, ``TopicsMissing``); the refusal's reading is
tested on the answers themselves (tests/unit/test_topic_creation.py).
Before, a refused creation passed for a success, and the daemon ran on
without its topics.
"""

from __future__ import annotations

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.runtime import Daemon
from calstream.topics.catalog import Topics

from .support import daemon_config, metric, scrape
from .test_start_heal import get, wait_until_waiting

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

FAST = dict(max_attempts=2, retry_backoff=0.1, park_recheck_seconds=1.0, roles=["watcher"])


async def test_a_daemon_that_may_not_create_its_topics_waits_for_an_admin(tmp_path,
                                                                          unique_prefix):
    with EmbeddedBroker(tmp_path / "external") as external:
        cfg = daemon_config(tmp_path, external.bootstrap, unique_prefix, create_topics=False,
                            **FAST)
        topics = Topics(cfg.topic_prefix)
        daemon = Daemon(cfg)
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            problems = await wait_until_waiting(daemon, f"the broker {external.bootstrap}",
                                                "topics_missing")
            said = [p for p in problems if "topics_missing" in p]
            assert said and f"{len(topics.specs)} topic(s) missing: " in said[0], problems
            assert topics.name("deadletter") in said[0] and "create_topics = false" in said[0]
            assert await anyio.to_thread.run_sync(get, daemon.ops.address, "/healthz") == (
                200, "ok\n")  # alive: a restart would not help
            rows = await kafka.describe_catalog(cfg, topics)
            assert not [r for r in rows if r["exists"]], rows  # it made none
            await kafka.create_topics(cfg, topics)  # the admin, at last
            with anyio.fail_after(60):
                while not daemon.start_waits.done:
                    await anyio.sleep(0.2)
            samples = scrape(daemon.ops.address)
            tg.cancel_scope.cancel()
    assert metric(samples, "calstream_parked_total", stage="start", cause="topics_missing") == 1
    assert metric(samples, "calstream_parked_items", stage="start",
                  cause="topics_missing") == 0
