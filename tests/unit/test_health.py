"""Honest stalls, a /healthz that sees the event loop, and the broker-loss
decisions (issue 13)."""

from __future__ import annotations

import random
import time
import urllib.error
import urllib.request

import anyio
import pytest

from calstream.daemon.deciders.broker_health import BrokerHealth
from calstream.daemon.doers.kafka import ConcurrentConsumer
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.daemon.operations.ops_http import OpsServer
from calstream.daemon.runtime import Daemon


def idle_consumer(stall_seconds: float) -> ConcurrentConsumer:
    # Only the bookkeeping is exercised: no broker is needed to judge a stall.
    c = ConcurrentConsumer(None, stage="detector1", handler=None, capacity=1, metrics=Metrics(),
                           topics=["raw"], stall_seconds=stall_seconds)
    c.last_finished = time.monotonic() - 10 * stall_seconds  # a long quiet period
    return c


def test_the_first_item_after_an_idle_period_is_not_a_stall(tmp_path):
    c = idle_consumer(60.0)
    c.started_at[1] = time.monotonic()  # taken just now
    c.in_flight = 1
    assert c.stalled(60.0) is None
    daemon = Daemon(load(None, env={}, flags={"work_dir": tmp_path}))
    daemon.start_waits.done = True  # every role runs
    daemon.consumers.append(c)
    assert daemon.readiness() == (True, [])


def test_an_item_in_flight_beyond_its_stage_limit_is_a_stall():
    c = idle_consumer(60.0)
    c.started_at[1] = time.monotonic() - 61
    c.started_at[2] = time.monotonic()  # a younger one does not hide the oldest
    c.in_flight = 2
    why = c.stalled(900.0)  # the stage's own limit wins over the shared one
    assert why is not None and "the oldest for 61s (limit 60s)" in why


def test_stage3_has_its_own_stall_limit():
    from calstream.daemon.stages import stage, stage_config
    cfg = load(None, env={}, flags={"stall_seconds": 100, "stage3_stall_seconds": 5000})
    assert stage_config(stage("stage3"), cfg).stall_seconds == 5000
    assert stage_config(stage("detector1"), cfg).stall_seconds == 100


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.anyio
async def test_healthz_fails_while_the_event_loop_is_blocked(tmp_path):
    daemon = Daemon(load(None, env={}, flags={"work_dir": tmp_path, "heartbeat_seconds": 1}))
    ops = OpsServer("127.0.0.1", 0, daemon.metrics, daemon.readiness, health=daemon.health)
    ops.start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.beat)
            await anyio.sleep(0.1)
            assert get(f"http://{ops.address}/healthz") == (200, "ok\n")
            time.sleep(1.5)  # wedge the loop: the beat task cannot run
            # Answered by the server's thread while the loop is still blocked.
            code, body = get(f"http://{ops.address}/healthz")
            assert code == 503 and "event loop has not run" in body
            while daemon.health()[0] is False:  # the loop runs again: it beats
                await anyio.sleep(0.1)
            assert get(f"http://{ops.address}/healthz") == (200, "ok\n")
            tg.cancel_scope.cancel()
    finally:
        ops.stop()


def test_broker_loss_is_said_once_per_change_and_unhealthy_after_the_bound():
    h = BrokerHealth(loss_bound=30.0)
    assert h.observe(True, 0.0) is None
    assert h.observe(False, 1.0) == "lost"
    assert [h.observe(False, t) for t in (2.0, 5.0, 20.0)] == [None, None, None]
    assert not h.unhealthy(20.0)
    assert h.observe(False, 31.0) == "still_lost"
    assert h.unhealthy(31.0)
    assert [h.observe(False, t) for t in (40.0, 100.0)] == [None, None]
    assert h.observe(True, 101.0) == "back"
    assert h.lost_for(101.0) is None and not h.unhealthy(101.0)
    assert h.observe(True, 102.0) is None


def test_probes_back_off_with_jitter_while_the_broker_is_lost():
    h = BrokerHealth(loss_bound=30.0)
    assert h.next_probe() == 1.0
    rng = random.Random(3)
    waits = []
    for t in range(12):
        h.observe(False, float(t))
        waits.append(h.next_probe(rng=rng))
    assert all(1.0 <= w <= 15.0 for w in waits)
    assert len(set(waits)) == len(waits)  # jittered: many daemons do not retry in step
    h.observe(True, 20.0)
    assert h.next_probe() == 1.0


def test_a_run_is_no_stall_before_its_time_out_and_a_silent_poll_loop_still_is():
    """The default stall limit of every stage lies past its task_timeout: a
    run is legitimate until then (at 900 s a 20-minute spec2 paged). The poll
    loop's silence is judged within 225 s whatever the stall limit."""
    from calstream.daemon.doers.kafka.concurrent_consumer import poll_silence_limit
    from calstream.daemon.stages import STAGES, stage_config

    cfg = load(None, env={}, flags={})
    for st in STAGES:
        own = stage_config(st, cfg)
        assert own.stall_seconds > own.task_timeout, st.name
    assert poll_silence_limit(cfg.stall_seconds) == 225.0
    assert poll_silence_limit(900.0) == 225.0 and poll_silence_limit(40.0) == 30.0
    c = idle_consumer(cfg.stall_seconds)
    c.last_poll = time.monotonic() - 300  # a wedged loop, five minutes
    assert "poll loop has not run" in c.stalled(cfg.stall_seconds)


def test_a_stall_limit_follows_its_time_out_unless_it_is_set(caplog):
    """Unset, a stage's stall limit lies past its own time-out: before, it
    stayed at 4500 s when task_timeout was raised alone (7200 s for a slow
    mode), and a legitimate 90-minute run paged CalstreamConsumerStalled. Set
    at or below the time-out, it is kept and warned about."""
    cfg = load(None, env={}, flags={"task_timeout": 7200, "stage3_task_timeout": 8 * 3600})
    assert (cfg.stall_seconds, cfg.stage3_stall_seconds) == (7200 + 900, 8 * 3600 + 900)
    assert load(None, env={}, flags={}).stall_seconds == 3600 + 900  # the default as before
    with caplog.at_level("WARNING", logger="calstream.config"):
        kept = load(None, env={}, flags={"task_timeout": 7200, "stall_seconds": 5000})
    assert kept.stall_seconds == 5000
    assert "stall_seconds (5000s) is not above task_timeout (7200s)" in caplog.text
