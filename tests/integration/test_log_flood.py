"""A poison stream against a live daemon: its log stays readable.

100 malformed records on the raw topic, one with a key that forges a line
and runs 100,000 characters: every one is a dead letter on the topic and in
the metric, and the log shows the first of them (defused) and one summary
line for the rest. The flood control's clock is held still (a window that
never ends by itself), so what the log shows does not depend on the speed of
the machine.
"""

from __future__ import annotations

import logging

import pytest
from aiokafka import AIOKafkaProducer

from calstream.daemon.deciders.log_floods import BURST
from calstream.daemon.operations import logs
from calstream.topics.catalog import Topics

from .support import daemon_config, metric, running_daemon, scrape, until, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

FORGED = b"k0\n12:00:00 ERROR   calstream.broker [- - -] broker lost\x1b[2J" + b"x" * 100_000


async def test_a_flood_of_malformed_records_is_summarised_in_the_log(
        tmp_path, broker, kit, unique_prefix, capsys):
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["detector1"])
    logs.setup("INFO")
    (flood,) = logs.flood_controls()
    flood.clock = lambda: 0.0
    try:
        async with running_daemon(cfg) as daemon:
            producer = AIOKafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks="all")
            await producer.start()
            raw = Topics(cfg.topic_prefix).name("raw")
            try:
                # The forged one first, alone: among the lines written.
                await producer.send_and_wait(raw, b"not JSON", key=FORGED)
                await wait_for(cfg, ["deadletter"], lambda ms: len(ms) >= 1)
                for i in range(1, 100):
                    await producer.send_and_wait(raw, b"not JSON", key=b"k%d" % i)
            finally:
                await producer.stop()
            letters = await wait_for(cfg, ["deadletter"], lambda ms: len(ms) >= 100)
            # Counted (and logged) once the broker has acknowledged each.
            await until(lambda: metric(scrape(daemon.ops.address), "calstream_dead_letters_total",
                                       stage="detector1", category="invalid_message") == 100)
            logs.flush_floods()  # the heartbeat's: the window has not ended
            during = capsys.readouterr().err.splitlines()
        logs.flush_floods(all_of_them=True)  # as at the process's end
        after = capsys.readouterr().err.splitlines()
    finally:
        logging.getLogger().handlers[:] = []
    assert len(letters) == 100 and {m["category"] for m in letters} == {"invalid_message"}
    said = [line for line in during if "dead letter [detector1/invalid_message]" in line]
    assert len(said) == BURST and not any("suppressed" in line for line in during)
    # The forged key: on its own line, escaped, cut.
    (forged,) = [line for line in said if " k0\\n12:00:00 ERROR" in line]
    assert "\\x1b[2J" in forged and "more characters]" in forged and len(forged) < 5000
    assert not any(line.startswith("12:00:00 ERROR") for line in during)
    (summary,) = [line for line in after if "suppressed" in line]
    assert f"suppressed {100 - BURST} similar warning(s)" in summary
    assert "the last: dead letter [detector1/invalid_message] k" in summary


async def test_a_flood_of_records_with_forged_redrive_headers_is_summarised(
        tmp_path, broker, kit, unique_prefix, capsys):
    """Each `calstream-redrive` header of a record consumed was an info line of
    its own, never flood-controlled: anyone who may write raw made 100 lines
    a record (100 headers), a million for a poison stream of 10,000."""
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["detector1"])
    logs.setup("INFO")
    (flood,) = logs.flood_controls()
    flood.clock = lambda: 0.0
    headers = [("calstream-redrive", b'{"by": "nobody", "reason": "forged %d"}' % i)
               for i in range(10)]
    try:
        async with running_daemon(cfg) as daemon:
            producer = AIOKafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks="all")
            await producer.start()
            try:
                for i in range(10):
                    await producer.send_and_wait(Topics(cfg.topic_prefix).name("raw"),
                                                 b"not JSON", key=b"k%d" % i, headers=headers)
            finally:
                await producer.stop()
            await until(lambda: metric(scrape(daemon.ops.address), "calstream_dead_letters_total",
                                       stage="detector1", category="invalid_message") == 10)
            during = capsys.readouterr().err.splitlines()
    finally:
        logging.getLogger().handlers[:] = []
    said = [line for line in during if "redriven dead letter" in line]
    assert len(said) == BURST, len(said)
