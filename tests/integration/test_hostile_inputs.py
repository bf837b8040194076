"""One live daemon against a corpus of bad files and messages.

Every bad input must become a dead letter with a reason (matched to its
record by topic, partition and offset, or to its file by name); the daemon
never exits; nothing is written outside its roots; a good visit dropped
afterwards still reaches its stage-3 product; and a daemon restarted on the
same broker (which reads all of it again) starts and becomes ready.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import urllib.request
from pathlib import Path

import anyio
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from calstream.daemon.operations.logs import TextFormatter
from calstream.steps.environment import environ
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, small_uncal
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec, simulate_program
from calstream.topics import contract
from calstream.topics.catalog import Topics

from . import hostile_corpus as corpus
from .support import daemon_config, metric, products, read_all, running_daemon, scrape, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def eid(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry below ``root`` with the digest of its content."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or not p.is_file():
            out[str(p)] = "link" if p.is_symlink() else "dir"
        else:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


async def until_ready(address: str) -> None:
    with anyio.fail_after(180):
        while not ready(address):
            await anyio.sleep(1)


async def send_all(cfg, items: list[corpus.BadMessage]) -> dict[tuple[str, int, int], str]:
    """Produce every item; return {(topic, partition, offset): item name}."""
    topics = Topics(cfg.topic_prefix)
    # Bigger than any producer of calstream would send: the oversize records.
    producer = AIOKafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks="all",
                                max_request_size=4 << 20)
    await producer.start()
    sent = {}
    try:
        for item in items:
            meta = await producer.send_and_wait(topics.name(item.topic), item.value, key=item.key)
            sent[(meta.topic, meta.partition, meta.offset)] = item.name
    finally:
        await producer.stop()
    return sent


def dead_letters(messages) -> list[contract.Message]:
    return [m for m in messages if isinstance(m, contract.Message) and m.type == "dead_letter"]


def unmatched(sent: dict, files: list[corpus.BadFile], letters: list) -> list[str]:
    """The bad inputs that have no dead letter yet."""
    by_record = {(d["original"].get("topic"), d["original"].get("partition"),
                  d["original"].get("offset")) for d in letters if d.get("original")}
    named = set()
    for d in letters:
        for field in ("path", "quarantined_to"):
            if d.get(field):
                named.add(Path(d[field]).name)
    missing = [name for key, name in sent.items() if key not in by_record]
    missing += [f"file: {f.name}" for f in files if not any(f.filename in n for n in named)]
    return missing


async def until_dead_lettered(cfg, sent: dict, files: list, seconds: float) -> list[str]:
    """Wait until every input has its dead letter; return those that have none."""
    deadline = anyio.current_time() + seconds
    while True:
        missing = unmatched(sent, files, dead_letters(await read_all(cfg, ["deadletter"])))
        if not missing or anyio.current_time() > deadline:
            return missing
        await anyio.sleep(2)


@pytest.fixture(scope="module")
def visits(tmp_path_factory):
    """A kit for SUB160P (one detector: headers say when a visit is complete),
    visit A (observation 001), visit B (002) and a PLANNED exposure (003)."""
    root = tmp_path_factory.mktemp("hostile-kit")
    spec = ProgramSpec(subarray="SUB160P", dithers=2)
    kit = build_kit(root, spec, seed=11)
    b = simulate_program(root / "b", dataclasses.replace(spec, observation="002"), seed=12)
    c = simulate_program(root / "c", dataclasses.replace(spec, observation="003", dithers=1,
                                                          planned=(1,)), seed=13)
    with environ(kit.crds_env):
        yield kit.uncal_files, b, c


async def test_a_daemon_survives_every_bad_input_and_still_calibrates(
        tmp_path, broker, visits, unique_prefix):
    visit_a, visit_b, [planned] = visits
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "note.txt").write_text("nothing may change below this folder\n")
    before = tree_digest(sentinel)
    cfg = daemon_config(tmp_path, broker, unique_prefix, stage3_settle=1.0,
                        incomplete_timeout=3.0, max_attempts=2)
    async with running_daemon(cfg) as daemon:
        # Real messages first: the corpus is made of their forged variants.
        await anyio.to_thread.run_sync(lambda: deliver([*visit_a, planned], cfg.inbox))
        seen = await wait_for(cfg, ["raw", "products", "work.stage2", "work.stage3", "holds"],
                              lambda ms: len(products(ms, "stage3")) >= 1 and any(
                                  m.type == "hold" for m in ms
                                  if isinstance(m, contract.Message)), timeout=400)
        real = [m for m in seen if isinstance(m, contract.Message)]
        templates = {
            "arrival": next(m.body for m in real if m.type == "arrival"),
            "order2": next(m.body for m in real if m.type == "work_order"
                           and m["stage"] == "stage2"),
            "order3": next(m.body for m in real if m.type == "work_order"
                           and m["stage"] == "stage3"),
            "product": products(real, "detector1")[0].body,
            "product2": products(real, "stage2")[0].body,
        }
        planned_arrival = next(m.body for m in real if m.type == "arrival"
                               and m["exposure_id"] == eid(planned))
        hold = next(m.body for m in real if m.type == "hold")
        items = [m for topic in corpus.CONSUMED
                 for m in corpus.byte_level(topic, templates["order2"] if topic.startswith(
                     "work") else templates["arrival"])]
        items += corpus.semantic(templates, sentinel=sentinel, inbox=cfg.inbox,
                                 planned_arrival=planned_arrival)
        files = corpus.bad_files(visit_a[0], sentinel)
        restart_items = corpus.hold_garbage(hold)
        assert len(items) + len(files) + len(restart_items) >= 150
        assert len({i.name for i in items} | {f.name for f in files}) == len(items) + len(files)

        stale_before = metric(scrape(daemon.ops.address), "calstream_stage_runs_total",
                              stage="stage2", outcome="stale")
        sent = await send_all(cfg, [i for i in items if i.expect == "dead_letter"])
        await send_all(cfg, [i for i in items if i.expect == "stale"])
        for f in files:
            f.write(cfg.inbox)

        # Every bad input ends as a dead letter with a reason.
        missing = await until_dead_lettered(cfg, sent, files, seconds=300)
        assert not missing, f"{len(missing)} bad inputs without a dead letter: {missing}"
        letters = dead_letters(await read_all(cfg, ["deadletter"]))
        assert all(d["reason"] for d in letters)
        # The explicit ignore: counted, not dead-lettered.
        stale = [i for i in items if i.expect == "stale"]
        with anyio.fail_after(60):
            while metric(scrape(daemon.ops.address), "calstream_stage_runs_total",
                         stage="stage2", outcome="stale") < stale_before + len(stale):
                await anyio.sleep(1)
        by_topic: dict[str, int] = {}
        for item in items:
            by_topic[item.topic] = by_topic.get(item.topic, 0) + 1
        print(f"\nhostile inputs: {len(items)} messages on {len(by_topic)} topics "
              f"({by_topic}), {len(files)} files, {len(restart_items)} hold records at restart; "
              f"{len(letters)} dead letters, 0 without")
        # Ready once what it still takes in is done (not at this instant).
        await until_ready(daemon.ops.address)

        # The forged CALCULATED arrival did not take the PLANNED file past its hold.
        later = await read_all(cfg, ["products"])
        assert eid(planned) not in {p["exposure_id"] for p in products(later, "stage2")}

        # A good visit afterwards still reaches its mosaic.
        await anyio.to_thread.run_sync(lambda: deliver(visit_b, cfg.inbox))
        await wait_for(cfg, ["products"], lambda ms: any(
            p["observation"] == "002" for p in products(ms, "stage3")), timeout=400)

        sent_at_restart = await send_all(cfg, restart_items)

    # Nothing outside the roots: the sentinel tree is as it was.
    assert tree_digest(sentinel) == before
    assert not (sentinel / "escaped").exists()

    # A daemon restarted on the same broker reads all of it again, and is ready.
    async with running_daemon(cfg) as again:
        await until_ready(again.ops.address)
        missing = await until_dead_lettered(cfg, sent_at_restart, [], seconds=120)
        assert not missing, f"garbage on holds without a dead letter: {missing}"


# Names of inbox files the watcher must quarantine although it cannot write
# them as they are: not UTF-8 (Python's str has surrogates: no JSON, no
# sqlite text, no Kafka key), control characters other than a newline (a log
# line or a terminal would obey them), and 255 bytes (a file, whose note
# "<name>.reason.txt" could be none).
_STEM = "jw01234001001_02101_00001_nrcb1"
ODD_NAMES = {
    "a byte that is not UTF-8": (_STEM + "\xff_uncal.fits").encode("latin-1"),
    "no UTF-8 at all": b"\xc3(\xfe_uncal.fits",
    "a carriage return": (_STEM + "\r_uncal.fits").encode(),
    "a tab": (_STEM + "\t_uncal.fits").encode(),
    "an ANSI escape": (_STEM + "\x1b[2J\x1b[31mRED_uncal.fits").encode(),
    "255 bytes": (_STEM + "x" * (255 - len(_STEM) - 11) + "_uncal.fits").encode(),
}


async def test_names_the_watcher_cannot_write_as_they_are_are_quarantined_with_a_reason(
        tmp_path, broker, unique_prefix, caplog):
    """Before: a name not UTF-8 was moved aside but its note raised (reported
    as "left in the inbox"), and its dead letter never went out (the Kafka
    key could not be encoded: retried forever); the ledger's query raised
    first ("unexpected error"); a name of 255 bytes had no note either."""
    assert len(ODD_NAMES["255 bytes"]) == 255
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["watcher"])
    good = f"jw{SMALL_UNCAL_HEADER['PROGRAM']}{SMALL_UNCAL_HEADER['OBSERVTN']}" \
        f"{SMALL_UNCAL_HEADER['VISIT']}_{SMALL_UNCAL_HEADER['VISITGRP']}" \
        f"{SMALL_UNCAL_HEADER['SEQ_ID']}{SMALL_UNCAL_HEADER['ACT_ID']}_" \
        f"{SMALL_UNCAL_HEADER['EXPOSURE']}_nrcb1_uncal.fits"
    caplog.set_level(logging.INFO)
    async with running_daemon(cfg):
        for raw in ODD_NAMES.values():
            with open(os.path.join(os.fsencode(cfg.inbox), raw), "wb") as f:
                f.write(b"not a FITS file\n" * 200)
        letters = await wait_for(cfg, ["deadletter"], lambda ms: len(ms) >= len(ODD_NAMES),
                                 timeout=60)
        # The watcher goes on: a good file after them is announced.
        (cfg.inbox / good).write_bytes(small_uncal(
            SMALL_UNCAL_HEADER, np.zeros((1, 2, 4, 4), dtype=np.uint16)))
        await wait_for(cfg, ["raw"], lambda ms: any(
            isinstance(m, contract.Message) and m["path"].endswith(good) for m in ms))
    assert all(isinstance(m, contract.Message) for m in letters), letters
    assert sorted(m["category"] for m in letters) == ["bad_file"] * len(ODD_NAMES)
    assert all(m["reason"] and m["quarantined_to"] for m in letters), letters
    assert os.listdir(os.fsencode(cfg.inbox)) == [good.encode()]
    notes = sorted(os.fsencode(cfg.quarantine / "x")[:-1] + n
                   for n in os.listdir(os.fsencode(cfg.quarantine)) if n.endswith(b".reason.txt"))
    assert len(notes) == len(ODD_NAMES) == len(os.listdir(os.fsencode(cfg.quarantine))) / 2
    for note in notes:
        text = open(note, encoding="utf-8").read()  # UTF-8, whatever the name
        assert "reason: " in text and not {"\r", "\x1b", "\t"} & set(text), text
    # Nothing went wrong on the way, and no log line carries a name's control
    # characters or surrogates raw (the logs' rule: docs/operations.md).
    said = [TextFormatter().format(r) for r in caplog.records]
    assert not [s for s in said if "unexpected error" in s or "on_reject failed" in s
                or "could not quarantine" in s or "not written" in s]
    for line in said:
        assert not {"\r", "\x1b", "\t"} & set(line) and line.encode("utf-8"), line
