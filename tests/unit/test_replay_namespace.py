"""A namespace is one CRDS context's reprocessing (deciders/replay_namespace.py,
doers/namespace_context.py).

Before, a second replay into a namespace with another context replaced the
first's files at the same paths, one by one: the namespace (promoted as
current) was a mix of both contexts and nothing said so. Real files in a
tmp product store; the stage's real admitter; no broker.
"""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace

import pytest

from calstream.daemon.deciders.replay_selection import Candidate, Selection, replayed_message
from calstream.daemon.doers.namespace_context import (
    _create,
    namespace_problem,
    read_record,
    record_path,
)
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.record_admitter import RecordAdmitter
from calstream.daemon.operations.config import ConfigError, load
from calstream.daemon.stages import stage
from calstream.topics import contract

from .test_stage2_members import planner_order_on_disk

A, B = "jwst_0001.pmap", "jwst_0002.pmap"


def _replay(context: str | None, rid: str = "0123456789abcdef") -> dict:
    return {"replay_id": rid, "from": "raw", "namespace": "ctx1", "crds_context": context,
            "requested_at": "2026-12-07T00:00:00Z", "selection": {}}


def test_the_first_replayed_item_fixes_the_namespace_s_context(tmp_path):
    store = ProductStore(tmp_path)
    assert namespace_problem(store, "ctx1", A, _replay(A)) is None  # fixes it
    assert read_record(store, "ctx1")["crds_context"] == A
    assert namespace_problem(store, "ctx1", A, _replay(A, "f" * 16)) is None  # another replay, same context
    problem = namespace_problem(store, "ctx1", B, _replay(B, "e" * 16))
    assert problem.startswith(f"namespace 'ctx1' is a reprocessing with CRDS context {A} "
                              "(fixed by replay 0123456789abcdef "), problem
    assert problem.endswith(f"this replay asks for {B}: a namespace's products are of one "
                            "context, so replay into a namespace of its own"), problem
    assert namespace_problem(store, "ctx2", B, _replay(B)) is None  # a namespace of its own


def test_two_first_items_at_once_fix_one_context(tmp_path):
    store = ProductStore(tmp_path)
    assert _create(store, "ctx1", {"crds_context": A, "replay_id": "1"})["crds_context"] == A
    # The second creator's link fails: it reads the first's record, whole.
    assert _create(store, "ctx1", {"crds_context": B, "replay_id": "2"})["crds_context"] == A
    assert not [p for p in record_path(store, "ctx1").parent.iterdir() if p.name.endswith(".tmp")]


def _product(store: ProductStore, namespace: str, n: int, context: str) -> None:
    """A provenance record of the namespace made before records were kept."""
    store.for_namespace(namespace).write_record(
        "01234", "001", name=f"jw01234001001_02101_0000{n}_nrcb1", stage="detector1",
        record={"work_id": str(n), "event": {"crds_context": context, "outputs": [],
                                             "inputs": []}})


def test_a_namespace_made_before_keeps_its_products_context(tmp_path):
    store = ProductStore(tmp_path)
    _product(store, "old", 1, A)
    assert f"is a reprocessing with CRDS context {A}" in namespace_problem(
        store, "old", B, _replay(B))
    assert namespace_problem(store, "old", A, _replay(A)) is None
    _product(store, "mixed", 1, A)
    _product(store, "mixed", 2, B)
    for context in (A, B):
        assert "already holds products of CRDS contexts jwst_0001.pmap, jwst_0002.pmap" in \
            namespace_problem(store, "mixed", context, _replay(context))
    assert read_record(store, "mixed") is None


@pytest.mark.parametrize("garbage", [b"", b"{", b"[1]", b'{"crds_context": 5}', b"\xff"])
def test_a_record_naming_no_context_takes_no_item(tmp_path, garbage):
    store = ProductStore(tmp_path)
    path = record_path(store, "ctx1")
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    assert "has a context record that names no CRDS context" in namespace_problem(
        store, "ctx1", A, _replay(A))


def _replayed_order(order: contract.Message, context: str | None, rid: str) -> contract.Message:
    request = {**_replay(context, rid), "from": "stage2"}
    _, message = replayed_message(Candidate(0, 7, 0, copy.deepcopy(order.body)), source="stage2",
                                  topic="calstream.work.stage2", request=request)
    return contract.decode(contract.encode(message), expected="work_order")


def test_the_stage_refuses_a_second_replay_of_another_context_into_a_namespace(
        tmp_path, monkeypatch):
    """The stage-2 admitter, on real files: a replay of a live order into
    ctx1 with context A runs (and fixes ctx1's context), one with B is a
    dead letter naming A; one naming no context runs with the daemon's."""
    monkeypatch.delenv("CRDS_PATH", raising=False)  # no cache to judge a context by
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    store = ProductStore(cfg.products)
    order, _ = planner_order_on_disk(store)
    admitter = RecordAdmitter(cfg, SimpleNamespace(store=store, publisher=None,
                                                   crds_context=A), stage("stage2"))
    verdict, _ = admitter._judge(_replayed_order(order, A, "a" * 16), True)
    assert verdict.action == "run", verdict
    verdict, _ = admitter._judge(_replayed_order(order, B, "b" * 16), True)
    assert verdict.action == "dead_letter" and verdict.category == "bad_input", verdict
    assert f"is a reprocessing with CRDS context {A} (fixed by replay {'a' * 16}" in \
        verdict.reason and f"this replay asks for {B}" in verdict.reason, verdict.reason
    verdict, _ = admitter._judge(_replayed_order(order, None, "c" * 16), True)
    assert verdict.action == "run", verdict  # the daemon's pinned context: A
    admitter.runner.crds_context = B  # pinned anew since
    verdict, _ = admitter._judge(_replayed_order(order, None, "d" * 16), True)
    assert verdict.action == "dead_letter" and f"asks for {B}" in verdict.reason


def test_calstream_replay_refuses_another_context_before_it_publishes(tmp_path, monkeypatch):
    """Refused before the source topic is read: no broker is asked."""
    monkeypatch.delenv("CRDS_PATH", raising=False)  # no cache to judge a context by
    from calstream.daemon.operations.replay import run_replay

    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    store = ProductStore(cfg.products)
    assert namespace_problem(store, "ctx1", A, _replay(A)) is None
    with pytest.raises(ConfigError, match=f"CRDS context {A} .*this replay asks for {B}"):
        asyncio.run(run_replay(cfg, source="raw", selection=Selection(), namespace="ctx1",
                               crds_context=B, dry_run=True))
    _product(store, "old", 1, A)  # made before records were kept
    with pytest.raises(ConfigError, match=f"CRDS context {A} .*this replay asks for {B}"):
        asyncio.run(run_replay(cfg, source="raw", selection=Selection(), namespace="old",
                               crds_context=B, dry_run=True))
    assert read_record(store, "old") is None  # the command fixes nothing: the stages do


def test_a_context_record_the_store_cannot_take_holds_the_item_back(tmp_path, monkeypatch):
    """A full store refused the namespace's context record; the item was
    admitted all the same ("the next item tries again"), and until the
    store had room each first item of another replay into the namespace
    was admitted with its own context: two contexts in one namespace. Now
    the admission raises, the stage's consumer keeps the record parked on
    the disk's fault (disk_full), nothing runs and nothing is dead-lettered,
    and once the record can be written the item runs and has fixed it."""
    import errno

    from aiokafka.structs import ConsumerRecord

    from calstream.daemon.doers import namespace_context
    from calstream.daemon.doers.kafka.concurrent_consumer import fault_cause
    from calstream.daemon.operations.metrics import Metrics

    monkeypatch.delenv("CRDS_PATH", raising=False)  # no cache to judge a context by
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    store = ProductStore(cfg.products)
    order, _ = planner_order_on_disk(store)
    done: list[str] = []

    async def keep_redrives(record) -> None:
        pass

    async def dead_letter(**letter) -> None:
        done.append(f"dead letter: {letter['reason']}")

    async def run(item) -> None:
        done.append(f"run in {item.namespace}")

    runner = SimpleNamespace(store=store, crds_context=A, metrics=Metrics(), run=run,
                             publisher=SimpleNamespace(keep_redrives=keep_redrives,
                                                       dead_letter=dead_letter))
    admitter = RecordAdmitter(cfg, runner, stage("stage2"))
    value = contract.encode(_replayed_order(order, A, "a" * 16))
    record = ConsumerRecord("calstream.work.stage2.replay", 0, 7, 0, 0, b"k", value, None,
                            0, len(value), [])
    real_open_new = namespace_context.open_new

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(namespace_context, "open_new", full)
    raised = None
    try:
        asyncio.run(admitter.handle(record))
    except Exception as exc:  # noqa: BLE001 - what the consumer parks the record on
        raised = exc
    assert done == [] and read_record(store, "ctx1") is None  # was: run in ctx1
    assert raised is not None and fault_cause(raised) == "disk_full", raised
    monkeypatch.setattr(namespace_context, "open_new", real_open_new)  # room again
    asyncio.run(admitter.handle(record))
    assert done == ["run in ctx1"] and read_record(store, "ctx1")["crds_context"] == A
