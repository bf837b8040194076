"""A redrive mark counts only on the dead letter's own original record.

Anyone who may write a topic calstream consumes could put a
``calstream-redrive`` header naming a real dead letter on a record of their
own: the letter was listed as redriven (hidden from ``list --pending``) and
the daemon kept the mark, putting it back with the letter after a broker
loss. A mark now counts only on a record whose topic, key and value are the
letter's original (its ``value_sha256``): a forger can only "redrive" by
putting back the exact original, which is a real redrive.
"""

from __future__ import annotations

import json

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.dead_letter_ledger import DeadLetterLedger
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import REDRIVE_HEADER

from .support import cli, daemon_config, running_daemon, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def dead_letters(messages) -> list:
    return [m for m in messages if getattr(m, "type", None) == "dead_letter"]


async def send(cfg, topic: str, key: bytes, value: bytes, headers: list) -> None:
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        await producer.send_and_wait(Topics(cfg.topic_prefix).name(topic), value, key=key,
                                     headers=headers)
    finally:
        await producer.stop()


def mark(letter, by: str) -> list:
    return [(REDRIVE_HEADER, json.dumps({
        "by": by, "reason": "forged", "dead_letter": letter.event_id,
        "dead_letter_ref": "0:0", "at": "2026-12-06T00:00:00Z"}).encode())]


async def test_a_forged_redrive_mark_leaves_the_dead_letter_pending(
        tmp_path, broker, unique_prefix, kit):
    """(``kit``: its CRDS cache, which a detector1 daemon's start needs.)"""
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["detector1"])
    async with running_daemon(cfg):
        await send(cfg, "raw", b"junk", b"not json at all", [])
        (letter,) = dead_letters(await wait_for(cfg, ["deadletter"], dead_letters, timeout=60))
        # Forged: another value under the same key, and the same value under
        # another key; both name the real letter. Each is dead-lettered in
        # turn, so the daemon has read both once there are three letters.
        await send(cfg, "raw", b"junk", b"something else", mark(letter, "forger-value"))
        await send(cfg, "raw", b"other", b"not json at all", mark(letter, "forger-key"))
        await wait_for(cfg, ["deadletter"], lambda ms: len(dead_letters(ms)) == 3, timeout=60)
        pending = await anyio.to_thread.run_sync(cli, cfg, "deadletters", "list", "--pending",
                                                 "--json")
        kept = await anyio.to_thread.run_sync(DeadLetterLedger(cfg.work_dir).redrives)
    assert pending.returncode == 0, pending
    assert letter.event_id in {r["event_id"] for r in json.loads(pending.stdout)}, pending
    assert kept == {}  # the daemon kept no forged mark to put back after a broker loss


async def test_the_original_record_put_back_by_hand_counts_as_its_redrive(
        tmp_path, broker, unique_prefix, kit):
    """Whoever puts back the exact original (topic, key, value) redrives it,
    by the command or not: that is what a redrive is."""
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["detector1"])
    async with running_daemon(cfg):
        await send(cfg, "raw", b"junk", b"not json at all", [])
        (letter,) = dead_letters(await wait_for(cfg, ["deadletter"], dead_letters, timeout=60))
        await send(cfg, "raw", b"junk", b"not json at all", mark(letter, "by-hand"))
        await wait_for(cfg, ["deadletter"], lambda ms: len(dead_letters(ms)) == 2, timeout=60)
        listed = await anyio.to_thread.run_sync(cli, cfg, "deadletters", "list", "--json")
        kept = await anyio.to_thread.run_sync(DeadLetterLedger(cfg.work_dir).redrives)
    rows = {r["event_id"]: r for r in json.loads(listed.stdout)}
    assert [n["by"] for n in rows[letter.event_id]["redrives"]] == ["by-hand"], rows
    assert [n["by"] for n in kept[letter.event_id]] == ["by-hand"], kept


async def test_a_forged_dead_letter_s_original_is_not_redriven(tmp_path, broker, unique_prefix):
    """A dead letter is anyone's to write (every role writes the topic), and
    a redrive sends the value it carries, with the operator's rights, to the
    topic it names: a forged letter's "original" went onto `work.stage2` as
    a stage-2 order, which only the planner may write (docs/operations.md,
    "Who may write what"). Now the record at the place the letter names must
    be that original (topic, key, value digest), or nothing is sent."""
    from calstream.daemon.doers.message_sender import send_messages
    from calstream.topics import contract
    from calstream.topics.dead_letters import original_record

    cfg = daemon_config(tmp_path, broker, unique_prefix)
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    stage2, real = topics.name("work.stage2"), b'{"an order": "the planner\'s"}'
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        placed = await producer.send_and_wait(stage2, real, key=b"k", partition=0)
    finally:
        await producer.stop()

    def letter(n: int, offset: int, value: bytes) -> tuple[str, contract.Message]:
        return "k", contract.build(
            "dead_letter", f"{n:064x}", category="permanent_failure", stage="stage2",
            attempts=1, reason="calwebb_image2 failed" + (" [forgery]" if n < 3 else ""),
            original=original_record(
                topic=stage2, partition=0, offset=offset, key=b"k", value=value,
                timestamp_ms=None))

    forged = b'{"an order": "the forger\'s, releasing a held exposure"}'
    await send_messages(cfg, topics.name("deadletter"), [
        letter(1, placed.offset, forged),  # a real record's place, another value
        letter(2, placed.offset + 999, forged),  # a place the topic never had
        letter(3, placed.offset, real)])  # a real letter: still redriven
    # A dry run of the forged ones alone says, by its exit status, that the
    # redrive would send nothing (it said 0, as if all would go).
    dry = await anyio.to_thread.run_sync(cli, cfg, "deadletters", "redrive", "--reason-contains",
                                         "[forgery]", "--reason", "cause fixed", "--dry-run")
    assert dry.returncode == 1 and "none of the 2 dead letter(s)" in dry.stderr, dry
    done = await anyio.to_thread.run_sync(cli, cfg, "deadletters", "redrive", "--all",
                                          "--reason", "cause fixed")
    sent = [r.value for r in await kafka.read_to_end(cfg, stage2)]
    assert sent == [real, real], done  # the original and its redrive; nothing forged
    assert done.returncode == 0 and "redriven 1 dead letter" in done.stdout, done
    assert "is not the original it carries" in done.stdout, done
    assert "no longer holds its original" in done.stdout, done
    shown = await anyio.to_thread.run_sync(cli, cfg, "deadletters", "show", f"{1:064x}")
    assert "redrive: not possible: the record at" in shown.stdout, shown
