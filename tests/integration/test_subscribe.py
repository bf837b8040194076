"""Downstream subscribers: ``calstream subscribe``, and a non-Python client.

One daemon run (watcher + detector1) over two synthetic exposures fills a
products topic; one of its events is then re-emitted (at-least-once) and a
record that is not an event is added. Both tests read that topic:

* ``calstream subscribe`` as a subprocess: filters, deduplication, invalid
  records reported, ``--write-dir``, and a consumer group that resumes;
* kcat (Debian's package, librdkafka in C) consumes it, and every event
  validates against the published schema file, read from disk as a
  non-Python reader would.

kcat is installed by `make tools` (a prerequisite of `make test`). Without it
the kcat test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import anyio
import jsonschema
import pytest

from calstream.daemon.doers import kafka
from calstream.steps.synthetic.downlink import deliver
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import daemon_config, products, running_daemon, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "topics" / "schemas" / "product.schema.json"
NOT_AN_EVENT = b"this is not a calstream event"

# Debian's kcat (bookworm: librdkafka 2.0.2) cannot parse tansu's ApiVersions
# v3 response: librdkafka before 2.2 skips tagged fields wrongly
# (confluentinc/librdkafka#4278). Without the version query it uses the
# pre-0.10 protocol, where ListOffsets v0 fails on tansu too, so the start is
# an absolute offset (0) instead of "beginning". -e (exit at the end of every
# partition) works: it uses the high watermark of the fetch response.
KCAT_TANSU = ["-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0"]


@pytest.fixture(scope="module")
async def stream(tmp_path_factory, broker, kit):
    tmp = tmp_path_factory.mktemp("subscribe")
    prefix = f"t{os.getpid()}-subscribe."
    cfg = daemon_config(tmp, broker, prefix, roles=["watcher", "detector1"])
    async with running_daemon(cfg):
        await anyio.to_thread.run_sync(lambda: deliver(kit.uncal_files[:2], cfg.inbox))
        msgs = await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 2, timeout=120)
    events = products(msgs)  # in the order of the partition: both are program 01234
    assert len(events) == 2 and len({e.event_id for e in events}) == 2
    first = events[0]
    # A redelivery, as the contract describes it: same event, new emitted_at.
    resent_at = dt.datetime.now(dt.UTC)
    again = contract.Message("product", {**first.body, "emitted_at": contract.iso(resent_at)})
    topic = Topics(prefix).name("products")
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        await producer.send_and_wait(topic, contract.encode(again), key=first["program"].encode())
        await producer.send_and_wait(topic, NOT_AN_EVENT, key=b"junk")
    finally:
        await producer.stop()
    return SimpleNamespace(cfg=cfg, prefix=prefix, topic=topic, events=events,
                           resent_at=resent_at, broker=broker, tmp=tmp)


def subscribe(stream, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "calstream.daemon.operations.cli", "subscribe",
           "--kafka-bootstrap", stream.broker, "--topic-prefix", stream.prefix, *args]
    env = {**os.environ, "CALSTREAM_FAST_GROUP_TIMING": "true"}  # group joins in ~1 s
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen) -> tuple[list[str], str]:
    # Generous: eight readers start at once (each a Python start-up), beside
    # another test file when `make test` runs two at a time.
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.splitlines(), err


def ids(lines: list[str]) -> list[str]:
    return [json.loads(line)["event_id"] for line in lines]


def schema_validator() -> jsonschema.protocols.Validator:
    """The published schema, from the file, with no calstream code involved."""
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


async def test_calstream_subscribe_filters_deduplicates_writes_and_resumes(stream):
    e1, e2 = stream.events
    between = contract.iso(stream.resent_at - dt.timedelta(milliseconds=1))
    out_dir = stream.tmp / "events"
    # Idle counts from the first empty fetch once partitions are assigned; a
    # group's committed offsets and the first records may come seconds later
    # on a loaded machine (eight readers start at once): generous, or a
    # reader leaves before its records and the test fails for nothing.
    idle = ("--until-idle", "8")
    # Independent readers (no group) run side by side: they all read everything.
    procs = {
        "all": subscribe(stream, *idle),
        "exposure": subscribe(stream, *idle, "--exposure", e2["exposure_id"], "--format", "text"),
        "matching": subscribe(stream, *idle, "--program", e1["program"], "--stage", "detector1",
                              "--pipeline", "calwebb_detector1", "--suffix", "rate",
                              "--observation", e1["observation"]),
        "no suffix": subscribe(stream, *idle, "--suffix", "i2d"),
        "no stage": subscribe(stream, *idle, "--stage", "stage3"),
        "since": subscribe(stream, *idle, "--since", between),
        "future": subscribe(stream, *idle, "--since", "2999-01-01T00:00:00Z"),
        "write": subscribe(stream, *idle, "--write-dir", str(out_dir)),
    }
    results = {name: finish(p) for name, p in procs.items()}

    lines, err = results["all"]
    assert ids(lines) == [e1.event_id, e2.event_id]  # the re-emitted copy is dropped
    assert "invalid record" in err and "not JSON" in err  # reported, and reading went on
    assert "2 event(s) delivered; 1 duplicate(s), 0 filtered out, 1 invalid" in err
    for line in lines:
        contract.validate("product", json.loads(line))

    lines, _ = results["exposure"]
    assert len(lines) == 1 and e2["product_name"] in lines[0] and "rate" in lines[0]
    assert ids(results["matching"][0]) == [e1.event_id, e2.event_id]
    assert results["no suffix"][0] == [] and results["no stage"][0] == []
    # --since filters on the payload's emitted_at: only the re-emitted copy is that recent.
    lines, _ = results["since"]
    assert ids(lines) == [e1.event_id]
    assert json.loads(lines[0])["emitted_at"] == contract.iso(stream.resent_at)
    assert results["future"][0] == []

    validator = schema_validator()
    written = sorted(out_dir.iterdir())
    assert [p.name for p in written] == sorted(f"{e.event_id}.json" for e in (e1, e2))
    for path in written:
        body = json.loads(path.read_text())
        validator.validate(body)
        assert body["event_id"] == path.stem

    # A consumer group commits after handling: a restart resumes where it stopped.
    lines, _ = finish(subscribe(stream, "--group", "science", "--max", "1"))
    assert ids(lines) == [e1.event_id]
    lines, _ = finish(subscribe(stream, "--group", "science", *idle))
    # e2, then e1's re-emission: this run has not seen e1, so at-least-once
    # delivers it again (its event_id is how a subscriber knows).
    assert ids(lines) == [e2.event_id, e1.event_id]
    lines, _ = finish(subscribe(stream, "--group", "science", *idle))
    assert lines == []


def kcat() -> str:
    path = shutil.which("kcat")
    if path:
        return path
    why = "kcat is not installed: `make tools` installs Debian's kcat package (apt-get install kcat)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why)


async def test_kcat_consumes_products_and_every_event_validates_against_the_schema_file(stream):
    cmd = [kcat(), *KCAT_TANSU, "-b", stream.broker, "-C", "-t", stream.topic,
           "-o", "0", "-e", "-J", "-q"]
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(cmd, capture_output=True, text=True, timeout=30))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    events = [r for r in records if r["payload"] != NOT_AN_EVENT.decode()]
    assert len(records) == 4 and len(events) == 3  # 2 events, 1 re-emission, 1 junk

    validator = schema_validator()
    for r in events:
        event = json.loads(r["payload"])
        validator.validate(event)
        assert r["key"] == event["program"]  # keyed by program, as documented
    assert sorted(json.loads(r["payload"])["event_id"] for r in events) == \
        sorted([stream.events[0].event_id, stream.events[1].event_id, stream.events[0].event_id])
    # The validator is not a rubber stamp: a broken event fails it.
    broken = {**json.loads(events[0]["payload"]), "event_id": "not-hex"}
    assert not validator.is_valid(broken)
