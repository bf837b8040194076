"""How long the daemon waits for the broker before it takes it for gone.

One setting, ``broker_timeout_seconds``, is every client's request time-out
and the planner's topic-read stall, so that a broker that stops answering
is a broker fault (waited out, parked, resumed) after the same time
wherever it is met. A client whose requests the broker may hold on purpose
(a fetch with nothing to return, a group member's join during a rebalance)
gets that much more, so that an allowed wait is not taken for a lost broker.
"""

from __future__ import annotations

import asyncio

import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.kafka import clients
from calstream.daemon.doers.kafka.lease import Lease, LeaseTiming
from calstream.daemon.operations.config import Config, ConfigError, load


def _timeouts(cfg: Config) -> dict[str, int]:
    async def build() -> dict[str, int]:  # aiokafka's clients want a running loop
        made = {"producer": kafka.producer(cfg), "admin": clients.admin(cfg),
                "stage consumer": kafka.group_consumer(cfg, "g", 500),
                "reader": clients.reader(cfg),
                "observer reader": clients.reader(cfg, fetch_max_wait_ms=100),
                "subscriber": clients.subscriber(cfg, "t", None),
                "subscriber in a group": clients.subscriber(cfg, "t", "g"),
                "lease": Lease(cfg, "lease-topic", "lease-group", on_granted=_nothing,
                               on_lost=_nothing).consumer()}
        try:
            return {name: (c.client if name == "producer" else c._client)._request_timeout_ms
                    for name, c in made.items()}
        finally:
            for name, c in made.items():  # never started: closed without a broker
                await (c.close() if name == "admin" else c.stop())
    return asyncio.run(build())


async def _nothing() -> None:
    pass


def test_production_waits_as_before_the_setting():
    # 30 s for a request; a group member's 40 s is aiokafka's own default,
    # which its stage consumers had (30 s and Kafka's 10 s rebalance).
    t = _timeouts(Config(kafka_bootstrap="127.0.0.1:1"))
    assert t["producer"] == t["admin"] == 30000
    assert t["stage consumer"] == t["subscriber in a group"] == 40000
    assert t["reader"] == 30500  # aiokafka's fetch wait, 500 ms
    assert t["observer reader"] == t["subscriber"] == 30100


def test_every_client_follows_the_setting_plus_what_the_broker_may_hold():
    cfg = Config(kafka_bootstrap="127.0.0.1:1", broker_timeout_seconds=8.0,
                 fast_group_timing=True, planner_lease_timeout=6.0)
    t = _timeouts(cfg)
    assert t["producer"] == t["admin"] == 8000
    assert t["stage consumer"] == 8000 + 1000  # the fast group's rebalance, over its fetch wait
    assert t["subscriber in a group"] == 8000 + 1000
    assert t["reader"] == 8500 and t["observer reader"] == t["subscriber"] == 8100
    assert t["lease"] == 8000 + LeaseTiming.of(cfg).rebalance_timeout_ms == 11000


def test_the_setting_is_read_from_every_source_and_a_busy_broker_is_not_a_lost_one():
    assert load(None, env={"CALSTREAM_BROKER_TIMEOUT_SECONDS": "12.5"},
                flags={}).broker_timeout_seconds == 12.5
    assert load(None, env={}, flags={}).broker_timeout_seconds == 30.0
    with pytest.raises(ConfigError, match="broker_timeout_seconds must be at least 1"):
        load(None, env={}, flags={"broker_timeout_seconds": 0.5})
    with pytest.raises(ConfigError, match="broker_timeout_seconds"):
        load(None, env={"CALSTREAM_BROKER_TIMEOUT_SECONDS": "-3"}, flags={})
    # A socket cannot wait 1e300 s (OverflowError in the probe): refused at the start.
    with pytest.raises(ConfigError, match="broker_timeout_seconds"):
        load(None, env={"CALSTREAM_BROKER_TIMEOUT_SECONDS": "1e300"}, flags={})
