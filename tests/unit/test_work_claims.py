"""Claims on work items between daemons sharing a store (issue 13): the pure
judgement and the file mechanics (doers/work_claims.py)."""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path

import anyio
import pytest

from calstream.daemon.deciders.work_claims import (
    FREE,
    LIVE,
    MINE,
    STALE,
    BadClaimName,
    Owner,
    claim_name,
    judge,
)
from calstream.daemon.doers import work_claims
from calstream.daemon.doers.work_claims import WorkClaims
from calstream.daemon.operations.metrics import Metrics

WID = "ab" * 32
A = Owner("host-a", 111, "token-a")
B = Owner("host-b", 222, "token-b")


@pytest.mark.parametrize("work_id", ["../../etc/passwd", "AB" * 32, "ab" * 31, "ab" * 32 + "/x",
                                     "", None, 7])
def test_a_work_id_that_is_not_a_hex_digest_names_no_claim(work_id):
    with pytest.raises(BadClaimName):
        claim_name(work_id, 1)


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.5])
def test_a_version_that_is_not_a_positive_integer_names_no_claim(version):
    with pytest.raises(BadClaimName):
        claim_name(WID, version)


def test_claim_names():
    assert claim_name(WID, 2) == f"{WID}.v2"


def test_judge():
    def j(**kw):
        args = dict(exists=True, heartbeat_age=1.0, owner=B, me=A, stale_seconds=10.0)
        return judge(**{**args, **kw})
    assert j(exists=False) == FREE
    assert j() == LIVE
    assert j(heartbeat_age=11.0) == STALE
    assert j(owner=None) == LIVE  # being written: judged by its age
    assert j(owner=None, heartbeat_age=11.0) == STALE
    assert j(owner=A) == MINE
    # Another process of this host that is gone: stale at once.
    assert j(owner=Owner("host-a", 999, "old"), owner_alive=False) == STALE
    # Another host's pid cannot be judged here: only its heartbeat counts.
    assert j(owner_alive=False) == LIVE
    assert Owner.from_record({"host": "h", "pid": True, "token": "t"}) is None
    assert Owner.from_record(["h"]) is None
    assert Owner.from_record(A.as_record()) == A


def claims(tmp_path, me, metrics=None):
    return WorkClaims(tmp_path, heartbeat_seconds=0.05, stale_seconds=5.0, metrics=metrics, me=me)


class Clock:
    """The observer's monotonic clock, moved by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def watched(tmp_path, me, clock, metrics=None):
    return WorkClaims(tmp_path, heartbeat_seconds=0.05, stale_seconds=5.0, metrics=metrics,
                      me=me, monotonic=clock)


def test_one_claim_per_work_and_only_its_owner_removes_it(tmp_path):
    a, b = claims(tmp_path, A), claims(tmp_path, B)
    path = a.path(WID, 1)
    assert path.parent == tmp_path / ".claims"
    assert a.try_claim(path, {}) == ("claimed", None)
    assert b.try_claim(path, {}) == ("live", A)
    b.release(path)  # not b's: stays
    assert path.exists()
    assert b.beat(path) == work_claims.LOST and a.beat(path) == work_claims.OURS
    a.release(path)
    assert not path.exists()
    assert b.try_claim(path, {})[0] == "claimed"


def test_a_stale_claim_is_taken_over_once(tmp_path):
    clock = Clock()
    a, b = claims(tmp_path, A), watched(tmp_path, B, clock)
    path = a.path(WID, 1)
    a.try_claim(path, {})
    assert b.try_claim(path, {}) == ("live", A)
    clock.t += 60  # silent for a minute, as b saw it
    assert b.try_claim(path, {}) == ("taken_over", A)
    assert a.beat(path) == work_claims.LOST  # the old owner learns it lost the claim
    a.release(path)  # and does not remove the new owner's
    assert b.try_claim(path, {})[0] == "claimed"  # b's own again (MINE)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_takeover_counts_once_when_another_daemon_wins_the_create(tmp_path):
    """The window between moving a stale claim aside and creating our own: a
    third daemon's plain create may win it (it runs as "claimed"); the takeover
    still counts once, by the daemon that removed the stale claim."""
    metrics, clock = Metrics(), Clock()
    b, c = watched(tmp_path, B, clock, metrics), claims(tmp_path, Owner("host-c", 333, "token-c"))
    path = b.path(WID, 1)
    claims(tmp_path, A).try_claim(path, {})
    assert b.try_claim(path, {"stage": "detector1"}) == ("live", A)
    clock.t += 60
    create, calls = b._create, []

    def c_wins_first(where, about):  # b's second create: after the stale one is gone
        calls.append(where)
        if len(calls) == 2:
            assert c.try_claim(where, about) == ("claimed", None)
        return create(where, about)
    b._create = c_wins_first
    assert b.try_claim(path, {"stage": "detector1"}) == ("live", A)
    assert metrics.claims_taken_over.labels(stage="detector1")._value.get() == 1
    assert c.beat(path) == work_claims.OURS  # the one claim there is c's


def test_a_claim_of_a_dead_process_of_this_host_is_stale_at_once(tmp_path):
    gone = Owner(A.host, 2**22 + 12345, "gone")  # above pid_max's default
    claims(tmp_path, gone).try_claim(claims(tmp_path, gone).path(WID, 1), {})
    a = claims(tmp_path, A)
    assert a.try_claim(a.path(WID, 1), {}) == ("taken_over", gone)


@pytest.mark.anyio
async def test_a_run_waits_for_a_live_claim_then_goes_on(tmp_path):
    metrics = Metrics()
    a, b = claims(tmp_path, A), claims(tmp_path, B, metrics)
    order = []
    a_holds, b_waits = anyio.Event(), anyio.Event()

    async def first():
        async with a.held(WID, 1, stage="detector1", name="x"):
            order.append("a starts")
            a_holds.set()
            await b_waits.wait()
            order.append("a ends")

    async def second():
        await a_holds.wait()
        async with b.held(WID, 1, stage="detector1", name="x"):
            order.append("b starts")

    async def watch():
        while metrics.claims_waited.labels(stage="detector1")._value.get() < 1:
            await anyio.sleep(0.01)
        b_waits.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
            tg.start_soon(watch)
    assert order == ["a starts", "a ends", "b starts"]
    assert not a.path(WID, 1).exists()


@pytest.mark.anyio
async def test_a_full_store_leaves_no_claim_and_lets_the_run_go_on_to_park(tmp_path,
                                                                          monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(work_claims.json, "dump", full)
    a = claims(tmp_path, A)
    ran = []
    async with a.held(WID, 1, stage="detector1", name="x"):
        ran.append(True)  # the run itself meets the fault and parks
    assert ran == [True]
    assert list((tmp_path / ".claims").iterdir()) == []  # no nameless claim left


def test_a_claim_of_this_process_that_no_run_holds_is_stale_at_once(tmp_path):
    # An earlier daemon in this process (a restart in the tests), or a run cut
    # short: its claim names this pid, but no run of this process holds it.
    me_then = Owner(socket.gethostname(), os.getpid(), "earlier")
    me_now = Owner(socket.gethostname(), os.getpid(), "now")
    then, now = claims(tmp_path, me_then), claims(tmp_path, me_now)
    path = then.path(WID, 1)
    assert then.try_claim(path, {})[0] == "claimed"
    assert now.try_claim(path, {}) == ("live", me_then)  # held: live
    work_claims._HELD.discard((str(path), "earlier"))  # ... until no run holds it
    assert now.try_claim(path, {}) == ("taken_over", me_then)
    now.release(path)


@pytest.mark.parametrize("pid", [0, -1, 10**30, True, "7"])
def test_a_pid_that_names_no_process_is_taken_as_running(pid):
    """Read from an untrusted file: never 'dead' on its word (no take-over, no
    removal), and never an exception."""
    from calstream.daemon.doers.child_processes import pid_alive

    assert pid_alive(pid) is True


def test_a_live_claim_is_not_stale_when_the_observers_wall_clock_leaps_forward(tmp_path):
    """Host B beats its claim; A's wall clock is an hour ahead (NTP stepped it,
    a VM resumed): the mtime looks an hour old, yet nothing says it stopped."""
    clock = Clock()
    b_path = claims(tmp_path, B).path(WID, 1)
    claims(tmp_path, B).try_claim(b_path, {})
    behind = time.time() - 3600
    os.utime(b_path, (behind, behind))
    a = watched(tmp_path, A, clock)
    assert a.try_claim(b_path, {}) == ("live", B)
    clock.t += 4.0
    behind += 4.0
    os.utime(b_path, (behind, behind))  # B beats: its mtime moves
    clock.t += 4.0
    assert a.try_claim(b_path, {}) == ("live", B)


def test_a_dead_claim_from_the_future_goes_stale_by_the_observers_own_clock(tmp_path):
    """A's wall clock stepped back an hour (or B's host runs an hour ahead):
    B's last heartbeat is in A's future. The claim of a dead B must not look
    fresh for that hour: it goes stale once A saw it silent for the bound."""
    clock = Clock()
    path = claims(tmp_path, B).path(WID, 1)
    claims(tmp_path, B).try_claim(path, {})
    ahead = time.time() + 3600
    os.utime(path, (ahead, ahead))
    a = watched(tmp_path, A, clock)
    assert a.try_claim(path, {}) == ("live", B)
    clock.t += 4.0
    assert a.try_claim(path, {}) == ("live", B)
    clock.t += 1.5  # 5.5 s silent, as A counts
    assert a.try_claim(path, {}) == ("taken_over", B)


@pytest.mark.anyio
@pytest.mark.parametrize("failing", ["read", "touch"])
async def test_the_heartbeat_survives_a_failed_read_or_touch_of_its_claim(tmp_path, monkeypatch,
                                                                         failing):
    """A claim read or touched at the wrong moment (EIO, ESTALE on a network
    store) is not a claim lost: the heartbeat goes on. Stopped for good, the
    claim went stale after ``claim_stale_seconds`` and another daemon took
    over and ran the same work a second time; a failed touch crashed the run."""
    a = claims(tmp_path, A)
    path = a.path(WID, 1)
    failed = []
    read, touch = work_claims.read_regular_text, os.utime

    def read_once_failing(where, *args, **kwargs):
        if Path(where) == path and not failed:
            failed.append(True)
            raise OSError(errno.EIO, "Input/output error")
        return read(where, *args, **kwargs)

    def touch_once_failing(where, *args, **kwargs):
        if Path(where) == path and not failed:
            failed.append(True)
            raise OSError(errno.ESTALE, "Stale file handle")
        return touch(where, *args, **kwargs)

    if failing == "read":
        monkeypatch.setattr(work_claims, "read_regular_text", read_once_failing)
    else:
        monkeypatch.setattr(work_claims.os, "utime", touch_once_failing)
    with anyio.fail_after(10):
        async with a.held(WID, 1, stage="detector1", name="x"):
            while not failed:
                await anyio.sleep(0.01)
            os.utime(path, (0, 0))  # its last heartbeat long ago: only a new beat moves it
            while path.stat().st_mtime_ns == 0:
                await anyio.sleep(0.01)
    assert not path.exists()


@pytest.mark.parametrize("failing", ["read", "unlink"])
def test_a_release_the_store_refuses_at_first_still_removes_the_claim(tmp_path, monkeypatch,
                                                                     failing):
    """A claim read or removed at the wrong moment (EIO, ESTALE) at a run's
    end is tried again. Before, a failed read left the claim without a word
    (another daemon waited ``claim_stale_seconds`` for a run long ended) and
    a failed removal raised out of the run, after its product was out."""
    a = claims(tmp_path, A)
    path = a.path(WID, 1)
    a.try_claim(path, {})
    refuse = failing_once(path, work_claims.read_regular_text if failing == "read"
                          else Path.unlink)
    if failing == "read":
        monkeypatch.setattr(work_claims, "read_regular_text", refuse)
    else:
        monkeypatch.setattr(Path, "unlink", refuse)
    a.release(path)
    assert refuse.failed and not path.exists()


def test_a_claim_the_store_never_lets_go_is_left_said_and_waited_out(tmp_path, monkeypatch,
                                                                    caplog):
    """No second run and no lost item: the claim left stays until it is
    stale to another daemon (which then finds the work done, as after any
    claim: work_item_runner._run_once), and this process, whose run no
    longer holds it, claims the work again at once."""
    clock = Clock()
    me = Owner(socket.gethostname(), os.getpid(), "me")
    a, b = claims(tmp_path, me), watched(tmp_path, B, clock)  # b: on another host
    path = a.path(WID, 1)
    a.try_claim(path, {})
    unlink = Path.unlink

    def refused(self, *args, **kwargs):
        if self == path:
            raise OSError(errno.EIO, "Input/output error")
        return unlink(self, *args, **kwargs)
    monkeypatch.setattr(Path, "unlink", refused)
    a.release(path)  # never raised
    assert path.exists() and "cannot remove our claim" in caplog.text
    monkeypatch.setattr(Path, "unlink", unlink)
    assert b.try_claim(path, {}) == ("live", me)  # another daemon waits ...
    clock.t += 6  # ... until it is stale (5 s here)
    assert b.try_claim(path, {}) == ("taken_over", me)
    b.release(path)
    a.try_claim(path, {})
    monkeypatch.setattr(Path, "unlink", refused)
    a.release(path)
    monkeypatch.setattr(Path, "unlink", unlink)
    assert a.try_claim(path, {})[0] == "claimed"  # this process: at once (MINE)
    a.release(path)
    assert not path.exists()


def failing_once(path, real):
    def refuse(where, *args, **kwargs):
        if Path(where) == path and not refuse.failed:
            refuse.failed = True
            raise OSError(errno.EIO, "Input/output error")
        return real(where, *args, **kwargs)
    refuse.failed = False
    return refuse


@pytest.mark.anyio
async def test_a_takeover_says_what_was_seen(tmp_path, caplog):
    """A dead pid of this host: its claim is taken over at once, and the line
    says so, not "no heartbeat for 300s" (none was waited for); a claim gone
    silent says for how long it was seen silent."""
    caplog.set_level("WARNING", logger="calstream.claims")
    gone = Owner(socket.gethostname(), 2**22 + 12345, "gone")  # above pid_max's default
    claims(tmp_path, gone).try_claim(claims(tmp_path, gone).path(WID, 1), {})
    a = claims(tmp_path, Owner(socket.gethostname(), os.getpid(), "a"))
    async with a.held(WID, 1, stage="detector1", name="x"):
        pass
    [line] = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert f"its owner, pid {gone.pid}, is gone from this host" in line, line
    assert "heartbeat" not in line, line

    caplog.clear()
    clock = Clock()
    claims(tmp_path, B).try_claim(claims(tmp_path, B).path(WID, 2), {})
    b = watched(tmp_path, A, clock)
    assert b.try_claim(b.path(WID, 2), {}) == ("live", B)
    clock.t += 61
    async with b.held(WID, 2, stage="detector1", name="x"):
        pass
    [line] = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert "no heartbeat seen for 61s (claim_stale_seconds: 5s)" in line, line
