"""A directory (or a FIFO, a link, a file where a directory goes) found where
calstream writes or reads one of its files: moved aside to
``<name>.unreadable-<UTC time>`` with a warning naming it, and the daemon goes
on (steps/regular_files.py). Before, every write over it raised, and a start
step retried it for ever."""

from __future__ import annotations

import calendar
import json
import logging
import os
import re
import stat
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers import broker_recovery, planner_snapshots
from calstream.daemon.doers.durable_files import write_json_atomically
from calstream.daemon.doers.inbox.ledger import Ledger
from calstream.daemon.doers.kafka import Publisher
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.work_claims import WorkClaims
from calstream.daemon.operations import deployment
from calstream.daemon.operations.config import Config, load
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.regular_files import (
    aside_name,
    directory_in_place,
    kind_of,
    move_aside,
    set_aside_unless_regular,
)
from calstream.topics.catalog import Topics

from .test_forged_work_records import _Producer
from .test_provenance_records import NAME, publish

ASIDE = re.compile(r"\.unreadable-[0-9]{8}T[0-9]{6}Z(\.[0-9]+)?$")


def asides(directory: Path, name: str) -> list[Path]:
    """What was moved aside from ``directory/name``."""
    return sorted(p for p in directory.iterdir()
                  if p.name.startswith(f"{name}.unreadable-") and ASIDE.search(p.name))


def a_directory_at(path: Path) -> Path:
    (path / "inside").mkdir(parents=True)
    (path / "inside" / "kept.txt").write_text("a person's")
    return path


# -- the pure parts -------------------------------------------------------------

def test_the_aside_name_says_when_in_utc():
    when = calendar.timegm((2026, 3, 29, 1, 30, 5, 0, 0, 0))
    assert aside_name("x.json", when) == "x.json.unreadable-20260329T013005Z"


def test_each_kind_is_named():
    assert kind_of(stat.S_IFDIR) == "a directory"
    assert kind_of(stat.S_IFIFO) == "a FIFO"
    assert kind_of(stat.S_IFLNK) == "a symbolic link"
    assert kind_of(stat.S_IFSOCK) == "a socket"
    assert kind_of(stat.S_IFCHR) == "a device"
    assert kind_of(stat.S_IFREG) == "a regular file"


# -- the helper, on real files --------------------------------------------------

def test_a_regular_file_or_nothing_stays(tmp_path):
    (tmp_path / "f.json").write_text("{}")
    assert set_aside_unless_regular(tmp_path / "f.json", what="record") is None
    assert set_aside_unless_regular(tmp_path / "none.json", what="record") is None
    assert set_aside_unless_regular(tmp_path / "f.json" / "below", what="record") is None
    assert (tmp_path / "f.json").read_text() == "{}"


@pytest.mark.parametrize("make", ["directory", "fifo", "link"])
def test_what_is_no_regular_file_is_moved_aside_with_a_warning(tmp_path, caplog, make):
    path = tmp_path / "odd\nname.json"
    if make == "directory":
        a_directory_at(path)
    elif make == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(tmp_path / "elsewhere.json")
    with caplog.at_level(logging.WARNING):
        aside = set_aside_unless_regular(path, what="a record")
    assert not os.path.lexists(path)
    assert asides(tmp_path, path.name) == [aside]
    if make == "directory":
        assert (aside / "inside" / "kept.txt").read_text() == "a person's"  # nothing lost
    # The names in repr: a newline in a name cannot forge a log line.
    assert repr(str(path)) in caplog.text and repr(str(aside)) in caplog.text


def test_found_twice_in_one_second_never_replaces_the_first(tmp_path):
    path = tmp_path / "x.json"
    os.mkdir(path)
    first = move_aside(path, what="record", why="test")
    os.mkdir(path)
    second = move_aside(path, what="record", why="test")
    assert first != second and first.is_dir() and second.is_dir()


def test_companions_go_along(tmp_path):
    path = tmp_path / "ledger.sqlite"
    for suffix in ("", "-wal"):
        Path(f"{path}{suffix}").write_text(suffix)
    aside = move_aside(path, what="ledger", why="test", companions=("-wal", "-shm"))
    assert Path(f"{aside}-wal").read_text() == "-wal" and not os.path.lexists(f"{path}-wal")


def test_a_file_where_a_directory_goes_is_moved_aside(tmp_path, caplog):
    (tmp_path / "planner").write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        made = directory_in_place(tmp_path / "planner" / "plans", root=tmp_path,
                                  what="the planner's directory")
    assert made.is_dir()
    [aside] = asides(tmp_path, "planner")
    assert aside.read_text() == "not a directory"
    assert repr(str(tmp_path / "planner")) in caplog.text


def test_a_link_to_a_directory_is_taken_as_one(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "planner").symlink_to(tmp_path / "elsewhere")
    directory_in_place(tmp_path / "planner" / "plans", root=tmp_path, what="x")
    assert (tmp_path / "elsewhere" / "plans").is_dir() and not asides(tmp_path, "planner")


def test_a_record_is_written_over_a_directory_in_its_place(tmp_path):
    path = a_directory_at(tmp_path / "r.json")
    write_json_atomically(path, {"a": 1}, what="record")
    assert json.loads(path.read_text()) == {"a": 1}
    assert len(asides(tmp_path, "r.json")) == 1


def test_a_record_is_written_below_a_file_where_its_directory_goes(tmp_path):
    (tmp_path / "planner").write_text("x")
    path = tmp_path / "planner" / "plans" / "p.json"
    write_json_atomically(path, {"a": 1}, what="record", root=tmp_path)
    assert json.loads(path.read_text()) == {"a": 1}


# -- the planner's snapshot -----------------------------------------------------

def test_a_snapshot_is_written_over_a_directory_in_its_place(tmp_path):
    path = a_directory_at(planner_snapshots.snapshot_path(tmp_path))
    assert planner_snapshots.write(tmp_path, {"a": 1}, offsets={("t", 0): 5}) > 0
    assert planner_snapshots.read(tmp_path).offsets == {("t", 0): 5}
    assert len(asides(path.parent, path.name)) == 1


def test_a_snapshot_that_is_a_directory_is_no_snapshot_and_moved_aside(tmp_path):
    path = a_directory_at(planner_snapshots.snapshot_path(tmp_path))
    assert planner_snapshots.read(tmp_path) is None
    assert not path.exists() and len(asides(path.parent, path.name)) == 1


def test_a_file_at_the_planner_s_directory_does_not_stop_a_snapshot(tmp_path):
    """``<work>/planner`` a regular file: mkdir raised FileExistsError at
    every snapshot."""
    (tmp_path / "planner").write_text("x")
    assert planner_snapshots.read(tmp_path) is None
    planner_snapshots.write(tmp_path, {"a": 1}, offsets={})
    assert planner_snapshots.read(tmp_path) is not None
    assert [p.read_text() for p in asides(tmp_path, "planner")] == ["x"]


# -- the re-publishing marker ---------------------------------------------------

def _recover(tmp_path: Path, store: ProductStore, monkeypatch) -> list:
    cfg = Config(work_dir=tmp_path / "work", products=store.root, roles=("planner",))
    publisher = Publisher(_Producer(), Topics(), Metrics())

    async def nothing_on_the_topic(cfg, name, kind):  # no broker here
        return {}

    monkeypatch.setattr(broker_recovery, "_on_topic", nothing_on_the_topic)
    anyio.run(broker_recovery.recover_product_events, cfg, Topics(), store, publisher)
    return publisher.producer.sent


@pytest.mark.parametrize("records", [1, 0])
def test_a_directory_at_the_marker_means_a_re_publishing_of_the_whole_store(tmp_path, records,
                                                                           monkeypatch):
    """The safe direction: whatever lies there, a re-publishing was under
    way. Removing the directory raised out of every start (no broker is
    asked here: an unfinished one does not ask whether the topic is empty)."""
    store = ProductStore(tmp_path / "products")
    if records:
        publish(store)
    marker = a_directory_at(broker_recovery.marker_path(tmp_path / "work"))
    sent = _recover(tmp_path, store, monkeypatch)
    assert [t for t, _ in sent] == [Topics().name("products")] * records
    assert not os.path.lexists(marker)  # written, then removed at the end
    assert len(asides(marker.parent, marker.name)) == 1


def test_a_record_whose_event_is_no_product_event_is_left_out_not_raised(tmp_path, caplog,
                                                                          monkeypatch):
    """A provenance record of the right shape whose event the product schema
    refuses (edited by hand) was handed to the encoding, whose refusal
    stopped every start on an empty broker."""
    store = ProductStore(tmp_path / "products")
    record_path, record = publish(store)
    edited = record_path.with_name(record_path.name.replace("00001", "00002"))
    spoiled = {k: v for k, v in record["event"].items() if k != "pipeline"}
    edited.write_text(json.dumps({**record, "event": {
        **spoiled, "product_name": NAME.replace("00001", "00002")}}))
    write_json_atomically(broker_recovery.marker_path(tmp_path / "work"), {})  # no broker asked
    sent = _recover(tmp_path, store, monkeypatch)
    assert [m["product_name"] for _, m in sent] == [NAME]
    assert "1 provenance record(s)" in caplog.text


# -- the work claims ------------------------------------------------------------

@pytest.mark.parametrize("make", ["directory", "fifo"])
def test_a_directory_at_a_claim_s_name_is_moved_aside_and_the_claim_made(tmp_path, make):
    """No daemon writes one there: it was "live" for ever, and the run waited."""
    claims = WorkClaims(tmp_path / "products", heartbeat_seconds=1, stale_seconds=60)
    path = claims.path("ab" * 32, 1)
    if make == "directory":
        a_directory_at(path)
    else:
        path.parent.mkdir(parents=True)
        os.mkfifo(path)
    assert claims.try_claim(path, {"stage": "stage2"}) == ("claimed", None)
    assert claims.look(path)[2] == claims.me
    assert len(asides(path.parent, path.name)) == 1


def test_a_file_at_the_claims_directory_is_moved_aside(tmp_path):
    claims = WorkClaims(tmp_path / "products", heartbeat_seconds=1, stale_seconds=60)
    claims.directory.parent.mkdir(parents=True)
    claims.directory.write_text("x")
    path = claims.path("ab" * 32, 1)
    assert claims.try_claim(path, {"stage": "stage2"}) == ("claimed", None)
    assert len(asides(claims.top, claims.directory.name)) == 1


# -- the deployment record ------------------------------------------------------

def test_the_deployment_record_is_written_over_a_directory_in_its_place(tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    path = a_directory_at(deployment.record_path(tmp_path))
    deployment.record(cfg, "127.0.0.1:1", embedded=False)
    assert deployment.read(tmp_path)["pid"] == os.getpid()
    assert len(asides(tmp_path, path.name)) == 1


# -- the watcher's sqlite ledger ------------------------------------------------

@pytest.mark.parametrize("at", ["", "-journal", "-wal"])
def test_a_directory_at_the_inbox_ledger_is_moved_aside_at_open(tmp_path, at):
    """sqlite cannot open it (an OperationalError, taken for the disk's: the
    watcher's start waited for ever)."""
    path = tmp_path / "ledger.sqlite"
    a_directory_at(Path(f"{path}{at}"))

    async def opened() -> bool:
        ledger = await Ledger.open(path)
        try:
            return await ledger.has("jw1", "sha256:1")
        finally:
            await ledger.close()

    assert anyio.run(opened) is False
    assert len(asides(tmp_path, f"ledger.sqlite{at}")) == 1


def test_a_damaged_inbox_ledger_goes_aside_under_the_shared_name(tmp_path):
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"not a database" * 1000)
    anyio.run(lambda: _open_and_close(path))
    [aside] = asides(tmp_path, "ledger.sqlite")
    assert aside.read_bytes().startswith(b"not a database")


async def _open_and_close(path: Path) -> None:
    await (await Ledger.open(path)).close()


# -- a provenance record of the product store -----------------------------------

def test_a_directory_at_a_provenance_record_is_moved_aside_at_publishing(tmp_path):
    store = ProductStore(tmp_path / "products")
    record = store.directory("01234", "001") / ".provenance" / f"{NAME}.detector1.json"
    a_directory_at(record)
    publish(store)
    assert store.lookup("01234", "001", name=NAME, stage="detector1") is not None
    assert len(asides(record.parent, record.name)) == 1
