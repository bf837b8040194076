"""The planner's refusal of a stage-2 product event that puts its exposure
in other level-3 candidates than its detector1 event did: a dead letter an
operator can redrive, as every refused record of the planner's.

The decider (deciders/level3_members.stage2_event_problem) makes the dead
letter from the event's value; the planner's loop adds the record it came
from (topic, partition, offset, value), which ``calstream deadletters
redrive`` re-publishes. Synthetic product events (no jwst run), the
session's real broker.
"""

from __future__ import annotations

import hashlib

import anyio
import pytest

from calstream.daemon.doers import planner_snapshots
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .support import cli, daemon_config, read_all, running_daemon, until, wait_for
from .test_planner_ha import product_event, publish
from .test_planner_parking import stage2_event

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(300)]


def _letters(messages) -> list[contract.Message]:
    return [m for m in messages if isinstance(m, contract.Message) and m.type == "dead_letter"]


def _corrected(rate: contract.Message, **header) -> contract.Message:
    """Another detector1 event of ``rate``'s exposure: a redelivery with ``header``."""
    digest = "sha256:" + hashlib.sha256(repr(header).encode()).hexdigest()
    wid = hashlib.sha256(digest.encode()).hexdigest()
    fields = {k: v for k, v in rate.body.items() if k not in ("event_id", "producer")}
    fields.update(work_id=wid, header={**rate["header"], **header},
                  inputs=[{**rate["inputs"][0], "digest": digest}],
                  emitted_at=contract.utc_now())
    return contract.build("product", contract.event_id("product", wid), **fields)


async def test_a_refused_stage_2_event_is_a_dead_letter_that_can_be_redriven(
        tmp_path, broker, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["planner"])
    rate = product_event(cfg.products, cfg.inbox, 4545, 1, 2)
    forged = stage2_event(rate)
    forged.body["header"] = {**rate["header"], "FILTER": "F200W"}
    async with running_daemon(cfg) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        await publish(cfg, [rate])
        await until(lambda: rate["exposure_id"] in daemon.planner.state.exposures)
        await publish(cfg, [forged])
        seen = await wait_for(cfg, ["deadletter"], lambda ms: bool(_letters(ms)), timeout=60)
    (letter,) = _letters(seen)
    assert (letter["stage"], letter["category"]) == ("planner", "bad_input")
    assert "puts it in other level-3 candidates than its detector1 event did" \
        in letter["reason"], letter["reason"]
    original = letter.get("original")
    assert original, "the dead letter carries no original record: it cannot be redriven"
    assert original["topic"] == Topics(cfg.topic_prefix).name("products")
    assert contract.decode(original["value"].encode())["event_id"] == forged["event_id"]
    # Restarted without a snapshot (the embedded default's first start after
    # one was lost; with one, what it does not cover), the planner reads the
    # products again and refuses the stage-2 event again: the same dead
    # letter, a second record. A redrive by its event id was refused then
    # ("names 2 dead letters"), and a selection sent the original twice.
    planner_snapshots.snapshot_path(cfg.work_dir).unlink(missing_ok=True)
    async with running_daemon(cfg) as daemon:
        await until(lambda: daemon.planner and daemon.planner.caught_up)
        await wait_for(cfg, ["deadletter"], lambda ms: len(_letters(ms)) == 2, timeout=60)
        assert rate["exposure_id"] not in daemon.planner.state.stage3.calibrated
        # The cause fixed: the exposure redelivered as the stage-2 event says it is.
        await publish(cfg, [_corrected(rate, FILTER="F200W")])
        await until(lambda: daemon.planner.state.exposures[rate["exposure_id"]].event[
            "header"]["FILTER"] == "F200W")
        redriven = await anyio.to_thread.run_sync(
            cli, cfg, "deadletters", "redrive", letter["event_id"][:16], "--reason", "fixed")
        assert redriven.returncode == 0 and "redriven 1" in redriven.stdout, (
            redriven.stdout, redriven.stderr)
        await until(lambda: rate["exposure_id"] in daemon.planner.state.stage3.calibrated)
    # The restarted planner refused the stage-2 event again as it read it again
    # (the same dead letter, its event id deterministic); nothing else.
    assert {m.event_id for m in _letters(await read_all(cfg, ["deadletter"]))} == {
        letter.event_id}
