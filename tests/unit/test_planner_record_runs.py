"""A run of records decided, then sent (Planner._on_records), sends what
deciding and sending each record before the next does (Planner._on_record):
the same messages, in the same order, the same dead letters, the same
positions. On the recorded stream of planner_stream.py (holds, a correction
and an operator's release between the product events, redeliveries), with
a forged event and bytes that are no event among them.

The publisher stands for the planner's GatedPublisher and notes what it is
handed (no broker: what is tested is the loop's order of work;
tests/integration/test_planner_ha.py runs the loop on a real broker).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from calstream.daemon.doers import planner_loop
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics

from . import planner_stream

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class _NotingPublisher:
    def __init__(self):
        self.handed: list[tuple] = []

    def _note(self, how: str, topic: str, key: str, message: contract.Message) -> None:
        body = {k: v for k, v in message.body.items() if k != "emitted_at"}
        self.handed.append((how, topic, key, json.dumps(body, sort_keys=True)))

    async def send(self, topic, key, message):
        contract.encode(message)  # refuses what the real one refuses
        self._note("send", topic, key, message)
        answered = asyncio.get_running_loop().create_future()
        answered.set_result(None)
        return answered

    async def publish(self, topic, key, message):
        contract.encode(message)
        self._note("publish", topic, key, message)
        return True

    async def keep_redrives(self, record):  # no dead-letter ledger here
        pass

    async def dead_letter(self, *, category, stage, key, reason, record=None, **extra):
        self.handed.append(("dead_letter", category, key, reason,
                            record.offset if record is not None else None))


class _Record:
    def __init__(self, topic: str, offset: int, value: bytes):
        self.topic, self.partition, self.offset = topic, 0, offset
        self.value, self.key, self.timestamp = value, b"k", None


def _records(topics: Topics) -> list[_Record]:
    values = [(topics.name("products" if kind == "product" else "pointing"),
               contract.encode(_from_the_store(payload)))
              for kind, payload, _ in planner_stream.steps() if kind in ("product", "pointing")]
    forged = json.loads(values[0][1])
    forged["outputs"][0]["path"] = "/etc/passwd"  # outside the product store
    forged["event_id"] = "f" * 64
    values.insert(3, (topics.name("products"), json.dumps(forged).encode()))
    values.insert(7, (topics.name("products"), b"{not json"))
    return [_Record(topic, n, value) for n, (topic, value) in enumerate(values)]


_SETTINGS = {"companion_wait": planner_stream.SETTINGS["companion_wait"],
             "stage3_settle": planner_stream.SETTINGS["level3_settle"],
             "stage3_quiet_period": planner_stream.SETTINGS["level3_quiet_period"],
             "stage3_stage2_wait": planner_stream.SETTINGS["level3_stage2_wait"]}


def _from_the_store(message: contract.Message) -> contract.Message:
    """The stream's stage-2 events made from their rate files in the store,
    as the planner's intake asks (the stream feeds the deciders directly)."""
    if message.type == "product" and message["stage"] != "detector1":
        rate = message["inputs"][0]["path"].replace("/inbox/", "/products/")
        message.body["inputs"] = [{**message["inputs"][0], "path": rate}]
    return message


def _planner(tmp_path, name: str) -> tuple[Planner, _NotingPublisher]:
    cfg = load(None, env={}, flags={"work_dir": tmp_path / name, "products": "/products",
                                    "inbox": "/inbox", **_SETTINGS})
    publisher = _NotingPublisher()
    planner = Planner(cfg, publisher=publisher, metrics=Metrics(), topics=Topics())
    planner.caught_up = True  # pointing records are decided where they are, not deferred
    return planner, publisher


@pytest.mark.parametrize("run", [5, planner_loop.TAKEN_AHEAD])
async def test_a_run_sends_what_one_record_after_another_sends(tmp_path, monkeypatch, run):
    monkeypatch.setattr(time, "time", lambda: planner_stream.T0 + 10_000)  # one clock for both
    one, one_sent = _planner(tmp_path, "one")
    many, many_sent = _planner(tmp_path, "many")
    records = _records(Topics())
    assert len(records) > 5  # several runs when run is 5, one when TAKEN_AHEAD

    for record in records:
        await one._on_record(record)
    for first in range(0, len(records), run):
        await many._on_records(records[first:first + run], set(), True)
    for planner in (one, many):
        await planner._settle()

    kinds = [h[0] for h in one_sent.handed]
    assert kinds.count("send") >= 6 and kinds.count("publish") >= 4  # orders and holds
    # The forged event, the bytes, and the stream's late exposure delivered
    # again with another arrival time under its event id.
    assert [(h[1], h[4]) for h in one_sent.handed if h[0] == "dead_letter"] == \
        [("bad_input", 3), ("invalid_message", 7), ("bad_input", 13)]
    assert many_sent.handed == one_sent.handed
    last = {(r.topic, 0): r.offset + 1 for r in records}  # every record covered
    assert len(last) == 2
    assert many.positions == one.positions == last
    assert many.records_seen == one.records_seen == len(records)
