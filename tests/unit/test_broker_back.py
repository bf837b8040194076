"""An external broker back after a loss: what it may have lost is put back
(BrokerSupervisor's ``on_back``), tried again at growing intervals while
that fails, once only when it succeeds; logged at the first failure only."""

from __future__ import annotations

import logging
import time

import pytest

from calstream.daemon.doers.broker_supervisor import BrokerSupervisor
from calstream.daemon.operations.metrics import Metrics


def supervisor(on_back) -> BrokerSupervisor:
    return BrokerSupervisor("127.0.0.1:9", Metrics(), loss_bound=30.0, answer_timeout=1.0,
                            on_back=on_back)


@pytest.mark.anyio
async def test_a_failed_recovery_is_owed_again_later_and_a_good_one_is_done(caplog):
    calls = []

    async def on_back():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("the broker went away again")

    sup = supervisor(on_back)
    caplog.set_level(logging.DEBUG, logger="calstream.broker")
    sup._back_owed = time.monotonic()
    waits = []
    for _ in range(2):
        before = time.monotonic()
        await sup._recover_after_loss()
        waits.append(sup._back_owed - before)
    assert len(calls) == 2 and 1.9 < waits[0] < 2.1 and 3.9 < waits[1] < 4.1  # 2 s, then 4 s
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "the broker went away again" in warned[0].getMessage()
    await sup._recover_after_loss()
    assert len(calls) == 3 and sup._back_owed is None  # done: nothing owed any more


@pytest.mark.anyio
async def test_the_interval_stops_growing_at_a_minute():
    async def on_back():
        raise OSError("no right to create topics")

    sup = supervisor(on_back)
    sup._back_owed = time.monotonic()
    for _ in range(10):
        await sup._recover_after_loss()
    assert 59 < sup._back_owed - time.monotonic() <= 60
