"""Previews a product event listed survive their daemon's stop: kept pending
in the product store until drawn, and taken up by the next daemon of the
stage (doers/pending_previews.py). A real runner and real worker processes
draw a real image's previews; forged entries are refused, never followed
out of the store; of two daemons taking up the same entries, each is taken
once."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import anyio
import pytest

from calstream.daemon.deciders.pending_preview_entries import (
    MAX_OUTPUTS,
    event_id_of,
    read_entry,
)
from calstream.daemon.doers.pending_previews import OWNER, PENDING, PendingPreviews, pending
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_claims import WorkClaims
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.metrics import Metrics
from tests.unit.test_preview_gate import _until
from tests.unit.test_runner_recheck import NAME, _runner_and_item


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _adopted(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value("calstream_previews_adopted_total",
                                             {"stage": "detector1", "outcome": outcome})


def _entries(store: ProductStore) -> list[Path]:
    return sorted(p for p in (store.top / PENDING / "detector1").glob("*/*.json")
                  if event_id_of(p.name))


class Clock:
    """The observer's monotonic clock, moved by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _pending(store: ProductStore, *, stale_seconds: float = 300.0) -> PendingPreviews:
    claims = WorkClaims(store.top, heartbeat_seconds=stale_seconds / 10,
                        stale_seconds=stale_seconds, monotonic=Clock())
    return PendingPreviews(store, "detector1", claims)


def _silent_for(pending: PendingPreviews, seconds: float) -> None:
    """The observer looks at every owner of the stage (a directory without an
    owner file: the directory), then its own clock moves on ``seconds``: an
    owner not touched meanwhile has been silent that long, as it counts."""
    for directory in pending.root.iterdir():
        watched = directory / OWNER if (directory / OWNER).exists() else directory
        pending.claims.silence.silent_for(watched, watched.stat())
    pending.claims.silence.monotonic.t += seconds


@pytest.mark.anyio
async def test_previews_left_undrawn_at_a_stop_are_drawn_by_the_next_daemon(tmp_path):
    metrics, bus, store, pool, runner, item = _runner_and_item(tmp_path)
    item.task = "tests.pool_tasks:write_rate_image"
    try:
        async with anyio.create_task_group() as tg:
            runner.background = tg
            tg.start_soon(runner.previews.keep_up, tg)  # as the daemon's stage does
            # Another calibration in flight: the preview waits behind the gate.
            with runner.previews.gate.calibrating():
                await runner.run(item)
                [entry] = _entries(store)
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()  # the daemon stops: the preview was not drawn
    finally:
        pool.close()
    [(_, event)] = [(t, m) for t, m in bus.sent if t == "products"]
    pictures = [Path(p["path"]) for p in event["previews"]]
    assert len(pictures) == 2 and not any(p.exists() for p in pictures)
    assert _entries(store) == [entry] and entry.stem == event["event_id"]
    assert pending(store.top) == 1  # what the demo waits on before it stops

    # The next daemon of the stage (another owner, in this very process: the
    # first one's owner is gone) takes the entry up and draws it.
    pool = WorkerPool(1, stage="detector1", metrics=metrics)
    pool.start()
    nxt = WorkItemRunner(runner.cfg, publisher=bus, store=store, pool=pool, metrics=metrics,
                         crds_context="jwst_0001.pmap")
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(nxt.previews.keep_up, tg)
            await _until(lambda: all(p.exists() for p in pictures) and not _entries(store))
            tg.cancel_scope.cancel()
    finally:
        pool.close()
    assert _adopted(metrics, "resumed") == 1 and _adopted(metrics, "refused") is None
    assert pending(store.top) == 0
    # Both owners' directories are gone: the first's emptied, the second's at its stop.
    assert list((store.top / PENDING / "detector1").iterdir()) == []


@pytest.mark.anyio
async def test_previews_drawn_leave_no_entry_behind(tmp_path):
    metrics, bus, store, pool, runner, item = _runner_and_item(tmp_path)
    item.task = "tests.pool_tasks:write_rate_image"
    try:
        await runner.run(item)  # no background: drawn before run() returns
    finally:
        pool.close()
    [(_, event)] = [(t, m) for t, m in bus.sent if t == "products"]
    assert all(Path(p["path"]).exists() for p in event["previews"])
    assert _entries(store) == []
    runner.previews.pending.close()
    assert list((store.top / PENDING / "detector1").iterdir()) == []


def _owner_directory(store: ProductStore, token: str, *, host: str, pid: int) -> Path:
    directory = store.top / PENDING / "detector1" / token
    directory.mkdir(parents=True)
    (directory / OWNER).write_text(json.dumps({"host": host, "pid": pid, "token": token}))
    return directory


def _product(store: ProductStore) -> str:
    directory = store.directory("01234", "001")
    directory.mkdir(parents=True, exist_ok=True)
    product = directory / f"{NAME}_rate.fits"
    product.write_bytes(b"SIMPLE")
    return str(product)


def test_only_gone_owners_entries_are_taken_up(tmp_path):
    store = ProductStore(tmp_path / "products")
    good = json.dumps({"outputs": [_product(store)], "log_context": {"exposure_id": NAME}})
    cases = {  # token: (host, pid), and whether it is taken up
        "a" * 16: (("elsewhere.example", 1), False),  # another host, beating
        "b" * 16: (("elsewhere.example", 1), True),  # another host, silent
        "c" * 16: ((socket.gethostname(), 2 ** 22 + 7), True),  # this host, pid gone
    }
    for n, (token, (owner, _)) in enumerate(cases.items()):
        directory = _owner_directory(store, token, host=owner[0], pid=owner[1])
        (directory / f"{n:064x}.json").write_text(good)
        (directory / f".{n + 100:064x}.json.{owner[1]}.tmp").write_text("{")  # a half write
    pending = _pending(store)
    _silent_for(pending, 1000)
    beating = store.top / PENDING / "detector1" / ("a" * 16) / OWNER
    os.utime(beating, ns=(1, beating.stat().st_mtime_ns + 1))  # it beat meanwhile
    fresh = store.top / PENDING / "detector1" / ("d" * 16)  # being made: no owner file yet
    fresh.mkdir()
    (fresh / f"{9:064x}.json").write_text(good)
    adopted, refused = pending.adopt()
    assert refused == 0
    assert sorted(int(e, 16) for e, _, _ in adopted) == [1, 2]
    assert [p["role"] for p in adopted[0][1]] == ["preview", "thumbnail"]
    assert adopted[0][2]["exposure_id"] == NAME
    assert (store.top / PENDING / "detector1" / ("a" * 16) / f"{0:064x}.json").exists()
    assert (store.top / PENDING / "detector1" / ("a" * 16) / f".{100:064x}.json.1.tmp").exists()
    # A gone owner's directory goes whole, its half-written entries with it.
    assert not (store.top / PENDING / "detector1" / ("b" * 16)).exists()
    assert not (store.top / PENDING / "detector1" / ("c" * 16)).exists()
    assert (fresh / f"{9:064x}.json").exists()
    pending.claims.silence.monotonic.t += 1000  # and now long silent (a still beating)
    os.utime(beating, ns=(1, beating.stat().st_mtime_ns + 1))
    adopted, _ = pending.adopt()
    assert [int(e, 16) for e, _, _ in adopted] == [9]


def test_forged_entries_are_refused_and_nothing_outside_the_store_is_touched(tmp_path, caplog):
    store = ProductStore(tmp_path / "products")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / f"{NAME}_rate.fits"
    secret.write_bytes(b"SIMPLE not the store's")
    linked = store.top / "01234" / "linked"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(outside)
    elsewhere = outside / "entry.json"
    elsewhere.write_text(json.dumps({"outputs": [_product(store)]}))
    directory = _owner_directory(store, "f" * 16, host="elsewhere.example", pid=1)
    loop = store.top / "01234" / "loop"
    loop.symlink_to(loop)
    forged = {
        1: b"\x00\xff not JSON",
        2: json.dumps({"outputs": [str(secret)]}).encode(),  # outside the store
        3: json.dumps({"outputs": [str(linked / secret.name)]}).encode(),  # through a link
        4: json.dumps({"outputs": [str(store.top / "01234" / ".." / ".." / "x_rate.fits")]}
                      ).encode(),
        5: json.dumps({"outputs": ["relative/x_rate.fits"]}).encode(),
        6: json.dumps({"outputs": [_product(store)] * (MAX_OUTPUTS + 1)}).encode(),
        7: json.dumps([1, 2]).encode(),
        8: b"[" * 100_000,  # deeper than any parser goes
        9: json.dumps({"outputs": [str(store.top / "01234" / "\ud800_rate.fits")]}).encode(),
        11: json.dumps({"outputs": [str(loop / "x_rate.fits")]}).encode(),  # resolve() raises
    }
    for n, body in forged.items():
        (directory / f"{n:064x}.json").write_bytes(body)
    (directory / f"{10:064x}.json").symlink_to(elsewhere)  # an entry read where it points
    (directory / "not-an-entry.json").write_text("{}")  # not an event id: left alone
    pending = _pending(store)
    _silent_for(pending, 1000)
    with caplog.at_level(logging.WARNING):
        adopted, refused = pending.adopt()
    assert adopted == [] and refused == len(forged) + 1
    # One warning an entry, naming why (an outside path is not warned of twice)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == refused and all(" refused (" in w for w in warned), warned
    # 2, 3 and 11: the loop of links (11) is refused as the link it is, as 3
    # is (it was a RuntimeError from resolving it, "unreadable", until the
    # store looked at each name below its top instead of resolving the path)
    assert sum("outside the product store" in w for w in warned) == 3, warned
    assert sum("passes through a symbolic link" in w for w in warned) == 2, warned
    assert secret.read_bytes() == b"SIMPLE not the store's"
    assert not (outside / "previews").exists()
    assert sorted(p.name for p in outside.iterdir()) == sorted([secret.name, "entry.json"])
    assert (directory / "not-an-entry.json").exists()


def test_of_two_daemons_taking_up_the_same_entries_each_takes_each_once(tmp_path):
    store = ProductStore(tmp_path / "products")
    good = json.dumps({"outputs": [_product(store)]})
    for token in ("1" * 16, "2" * 16):
        directory = _owner_directory(store, token, host="elsewhere.example", pid=1)
        for n in range(150):
            (directory / f"{int(token[0]) * 1000 + n:064x}.json").write_text(good)
    results: list[list] = [[], []]
    start = threading.Barrier(2)
    daemons = [_pending(store), _pending(store)]
    for daemon in daemons:
        _silent_for(daemon, 1000)

    def adopt(i: int) -> None:
        start.wait()
        results[i] = daemons[i].adopt()[0]

    threads = [threading.Thread(target=adopt, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [e for r in results for e, _, _ in r]
    assert len(taken) == len(set(taken)) == 300


def test_an_entry_that_cannot_be_written_is_a_warning_not_a_failed_commit(tmp_path):
    top = tmp_path / "products"
    top.write_text("a file where the store's directory goes")
    pending = _pending(ProductStore(top))
    assert pending.add("0" * 64, [str(top / "x_rate.fits")], {}) is False
    assert pending.add("../../etc", [], {}) is False


@pytest.mark.parametrize(("value", "why"), [
    ({"outputs": []}, "no list of outputs"),
    ({"outputs": "/p/x_rate.fits"}, "no list of outputs"),
    ({"outputs": [7]}, "is not a path"),
    ({"outputs": ["/p/x\x00_rate.fits"]}, "is not a path"),
    ({"outputs": ["/p/./x_rate.fits"]}, "normalised"),
    ({"outputs": ["/p/x_rate.fits"], "log_context": []}, "log context"),
    ({"outputs": ["/p/x_rate.fits"], "log_context": {"stage": "s" * 500}}, "short text"),
    ("text", "not a JSON object"),
])
def test_an_entry_is_read_as_untrusted(value, why):
    assert why in read_entry(value)


def test_a_true_entry_reads_back_with_only_its_log_keys():
    assert read_entry({"outputs": ["/p/x_rate.fits"], "log_context": {"stage": "detector1",
                                                                      "other": {"x": 1}}}) == (
        ["/p/x_rate.fits"], {"exposure_id": None, "stage": "detector1", "work_id": None})


def test_a_record_that_cannot_be_written_takes_its_entry_away(tmp_path):
    """The entry is written before the product's record; a record that fails
    (the commit is tried again or given up) leaves nothing to draw."""
    from calstream.daemon.doers.preview_runner import Previews

    store = ProductStore(tmp_path / "products")

    class _Pool:
        stage = "detector1"

    previews = Previews(_Pool(), _pending(store), Metrics(), max_wait=0, heartbeat_seconds=1)
    outputs = [{"path": _product(store)}]
    with pytest.raises(OSError), previews.kept("1" * 64, outputs, {}, True):
        assert len(_entries(store)) == 1
        raise OSError(28, "No space left on device")
    assert _entries(store) == []
    with previews.kept("2" * 64, outputs, {}, True):
        pass
    assert [p.stem for p in _entries(store)] == ["2" * 64]
    with previews.kept("3" * 64, outputs, {}, False):  # nothing listed: no entry
        pass
    assert [p.stem for p in _entries(store)] == ["2" * 64]


def test_a_link_where_the_entries_go_takes_no_write_and_no_file_along(tmp_path):
    store = ProductStore(tmp_path / "products")
    store.top.mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "detector1" / ("e" * 16)).mkdir(parents=True)
    theirs = outside / "detector1" / ("e" * 16) / f"{1:064x}.json"
    theirs.write_text(json.dumps({"outputs": [_product(store)]}))
    owner = theirs.with_name(OWNER)  # a gone owner's, long silent: taken up if followed
    owner.write_text(json.dumps({"host": "elsewhere.example", "pid": 1, "token": "e" * 16}))
    (store.top / PENDING).symlink_to(outside)
    pending = _pending(store)
    _silent_for(pending, 1000)
    assert pending.add("0" * 64, [_product(store)], {}) is False
    assert pending.adopt() == ([], 0)
    assert theirs.exists() and owner.exists()
    assert sorted(p.name for p in (outside / "detector1").iterdir()) == ["e" * 16]


def test_owners_are_judged_by_their_silence_not_by_the_observers_wall_clock(tmp_path):
    """The observer's wall clock stepped (NTP, a resumed VM, an operator's
    date) or the owner's host runs an hour off: an owner beating with mtimes
    an hour behind is not gone; a dead owner (or a directory without one)
    whose last mtime is an hour ahead is gone once silent for the bound as
    the observer counts, not an hour later."""
    store = ProductStore(tmp_path / "products")
    good = json.dumps({"outputs": [_product(store)]})
    ahead, behind = time.time() + 3600, time.time() - 3600
    for n, (token, when) in enumerate([("a" * 16, behind), ("b" * 16, ahead)]):
        directory = _owner_directory(store, token, host="elsewhere.example", pid=1)
        (directory / f"{n:064x}.json").write_text(good)
        os.utime(directory / OWNER, (when, when))
    ownerless = store.top / PENDING / "detector1" / ("c" * 16)
    ownerless.mkdir()
    (ownerless / f"{2:064x}.json").write_text(good)
    os.utime(ownerless, (ahead, ahead))
    pending = _pending(store)
    assert pending.adopt() == ([], 0)  # first seen: nobody silent yet
    behind += 30
    os.utime(store.top / PENDING / "detector1" / ("a" * 16) / OWNER, (behind, behind))  # a beats
    pending.claims.silence.monotonic.t += 301
    adopted, _ = pending.adopt()
    assert sorted(int(e, 16) for e, _, _ in adopted) == [1, 2]
