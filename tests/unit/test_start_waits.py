"""A start step waits out an infrastructure fault and says so; anything else
stops the start at once. (A real read-only error from the kernel's errno, a
real metrics registry; the daemon-level tests are in
tests/integration/test_start_heal.py.)"""

from __future__ import annotations

import errno

import anyio
import pytest

from calstream.daemon.doers.start_waits import StartWaits
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.failures import infrastructure_cause

pytestmark = pytest.mark.anyio


def waits(tmp_path) -> StartWaits:
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "max_attempts": 2,
                                    "retry_backoff": 0.01, "park_recheck_seconds": 0.01})
    return StartWaits(cfg, Metrics())


def parked(w: StartWaits, cause: str) -> float:
    return w.metrics.parked.labels(stage="start", cause=cause, root="")._value.get()


async def test_a_read_only_disk_is_waited_for_and_shown(tmp_path):
    w = waits(tmp_path)
    seen: list[tuple[list[str], float]] = []

    async def attempt() -> str:
        seen.append((w.problems(), parked(w, "read_only")))
        if len(seen) < 4:
            raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "products"))
        return "written"

    assert w.problems() == ["starting"]
    assert await w.step("the product store", attempt, infrastructure_cause) == "written"
    [first], metric = seen[0]  # the first attempt, not failed yet: named, not parked
    assert first.startswith("starting: trying the product store since 20") and metric == 0
    waiting = [problem for problems, _ in seen[1:] for problem in problems]
    assert len(waiting) == len(seen) - 1 and all(p.startswith("starting: waiting for the product store (read_only) since 20")
               for p in waiting), waiting
    assert seen[-1][1] == 1  # parked after max_attempts quick retries
    assert parked(w, "read_only") == 0 and w.problems() == ["starting"]
    assert w.metrics.parked_total.labels(stage="start", cause="read_only")._value.get() == 1
    w.done = True
    assert w.problems() == []


async def test_what_no_wait_can_fix_stops_the_start_at_once(tmp_path):
    w = waits(tmp_path)
    tries = []

    async def attempt() -> None:
        tries.append(1)
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    with pytest.raises(PermissionError):
        await w.step("the work directory", attempt, infrastructure_cause)
    assert len(tries) == 1 and w.problems() == ["starting"]


async def test_cancelled_while_waiting_leaves_nothing_parked(tmp_path):
    w = waits(tmp_path)

    async def attempt() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.step, "the work directory", attempt, infrastructure_cause)
            while parked(w, "disk_full") < 1:
                await anyio.sleep(0.01)
            scope.cancel()
    assert parked(w, "disk_full") == 0 and w.waiting is None


async def test_a_step_of_the_planner_s_restore_parks_in_its_stage_and_is_known_as_its_own(
        tmp_path):
    """A restore's step (a send, a read) keeps the planner's stage in the
    metrics, and /readyz can tell the wait it shows is the planner's (then
    it does not also say the planner is catching up: it is not reading)."""
    w = waits(tmp_path)
    seen: list[tuple[bool, bool, float]] = []

    async def attempt() -> str:
        seen.append((w.waiting_of("planner"), w.waiting_of("daemon"),
                     w.metrics.parked.labels(stage="planner", cause="disk_full", root="")._value.get()))
        if len(seen) < 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))
        return "sent"

    assert await w.step("the planner's disk", attempt, infrastructure_cause, stage="planner",
                        max_attempts=1, owner="planner") == "sent"
    # Parked at the first failure (max_attempts=1), in the planner's stage.
    assert seen == [(False, False, 0), (True, False, 1)]
    assert not w.waiting_of("planner")
    assert w.metrics.parked_total.labels(stage="planner", cause="disk_full")._value.get() == 1
    assert w.metrics.parked_total.labels(stage="start", cause="disk_full")._value.get() == 0


@pytest.mark.parametrize("where", ["work_dir", "products", "inbox", "quarantine"])
def test_a_file_where_a_root_goes_is_a_configuration_error(tmp_path, where):
    """`calstream run --work-dir calstream.toml` (the config file for the work
    dir) ended the start in FileExistsError's exception-group traceback."""
    from calstream.daemon.doers.start_roots import make_inbox, prepare_roots
    from calstream.daemon.operations.config import ConfigError

    def prepare(cfg):
        prepare_roots(cfg)
        make_inbox(cfg)

    (tmp_path / "a-file").write_text("[calstream]\n")
    flags = {"work_dir": tmp_path / "work", where: tmp_path / "a-file"}
    with pytest.raises(ConfigError, match="a-file: a file is there, or above it, not a dir"):
        prepare(load(None, env={}, flags=flags))
    flags[where] = tmp_path / "a-file" / "below"
    with pytest.raises(ConfigError, match="below: a file is there, or above it"):
        prepare(load(None, env={}, flags=flags))
    assert (tmp_path / "a-file").read_text() == "[calstream]\n"


async def test_two_steps_waiting_at_once_are_both_shown(tmp_path):
    """The daemon's start and the planner's (on its own loop) can wait at the
    same time: /readyz names both, and each leaves with its own step (one
    slot showed only the wait that began last)."""
    w = waits(tmp_path)
    lease_waits, both_shown = anyio.Event(), anyio.Event()
    seen: list[list[str]] = []

    async def lease() -> str:
        if not both_shown.is_set():
            lease_waits.set()
            raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "lease"))
        return "joined"

    async def producer() -> str:
        await lease_waits.wait()
        seen.append(w.problems())
        if len(seen) < 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "planner"))
        both_shown.set()
        return "started"

    async with anyio.create_task_group() as tg:
        tg.start_soon(w.step, "the lease's group", lease, infrastructure_cause)
        assert await w.step("the planner's producer", producer, infrastructure_cause,
                            owner="planner") == "started"
    shown = seen[-1]
    assert len(shown) == 2 and "the lease's group (read_only)" in shown[0] \
        and "the planner's producer (disk_full)" in shown[1], shown
    assert w.problems() == ["starting"] and not w.waiting_of("planner")


def test_no_broker_answering_a_metadata_request_is_waited_for():
    """aiokafka says so with a bare KafkaError (consumer.topics(), which the
    planner's topic reader asks first): a broker stopped at that moment
    ended the planner's start, and the daemon with it (seen once in CI,
    tests/integration/test_start_heal.py [topic reader])."""
    from aiokafka.errors import KafkaError

    from calstream.daemon.doers.kafka import unreachable
    from calstream.daemon.doers.start_waits import broker_cause

    lost = KafkaError("Unable to get cluster metadata over all known brokers")
    assert broker_cause(lost) == "broker_unreachable"
    assert unreachable(ExceptionGroup("task group", [lost])) is not None
    assert broker_cause(KafkaError("something else")) is None  # not every KafkaError


async def test_a_first_attempt_that_has_no_answer_yet_is_named_while_it_lasts(tmp_path):
    """A broker that takes the connection and never answers holds the first
    attempt for request_timeout (30 s): /readyz said only "starting", no
    cause, until it failed. It names the step tried from the start."""
    from aiokafka.errors import KafkaConnectionError

    from calstream.daemon.doers.start_waits import broker_cause

    w = waits(tmp_path)
    trying, shown = anyio.Event(), anyio.Event()
    tries = []

    async def attempt() -> str:
        tries.append(1)
        if len(tries) == 1:
            trying.set()
            await shown.wait()  # the broker's silence
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")
        return "connected"

    async with anyio.create_task_group() as tg:
        tg.start_soon(w.step, "the broker 127.0.0.1:1", attempt, broker_cause)
        await trying.wait()
        [during] = w.problems()
        shown.set()
    assert during.startswith("starting: trying the broker 127.0.0.1:1 since 20"), during
    assert "no answer yet" in during
    assert w.problems() == ["starting"] and len(tries) == 2
    w.done = True
    assert w.problems() == []


async def test_a_silent_inbox_mount_parks_the_start_which_goes_on_by_itself(tmp_path,
                                                                            monkeypatch):
    """The start made the inbox (and the quarantine) in one of anyio's
    threads, untimed: on an inbox mount gone silent (a hard NFS mount whose
    server is away) the start waited there for ever, /readyz saying only
    "trying ...", no metric, and a stop could not end it. Now the making is
    timed as the door's reads: parked as inbox_hung, and the start goes on
    once the mount answers. (A real thread held until the test lets it go.)"""
    import os
    import threading

    from calstream.daemon.doers.start_waits import hung_or_disk_cause

    cfg = load(None, env={}, flags={"work_dir": tmp_path, "max_attempts": 2,
                                    "retry_backoff": 0.01, "park_recheck_seconds": 0.05})
    w = StartWaits(cfg, Metrics(), read_seconds=0.2)
    answers, returned = threading.Event(), []
    real = os.mkdir

    def mkdir(path, *args, **kw):
        if os.fspath(path) == os.fspath(cfg.inbox) and not answers.is_set():
            answers.wait(20)  # a bound for a broken test, not a measure
            returned.append(1)
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.step, "the inbox", w.inbox_made, hung_or_disk_cause)
            with anyio.fail_after(10):
                while parked(w, "inbox_hung") < 1:
                    await anyio.sleep(0.02)
            [shown] = w.problems()
            assert shown.startswith("starting: waiting for the inbox (inbox_hung)"), shown
            assert not returned, "parked while its mount is silent"
            answers.set()  # the mount answers
        assert cfg.inbox.is_dir() and cfg.quarantine.is_dir()
        assert parked(w, "inbox_hung") == 0 and w.problems() == ["starting"]
    finally:
        answers.set()


@pytest.mark.parametrize("root,cause", [("work_dir", "work_dir_hung"), ("products", "store_hung")])
async def test_a_silent_work_dir_or_store_parks_the_start_which_goes_on_by_itself(
        tmp_path, monkeypatch, root, cause):
    """The start made the work directory (its lock taken, the deployment
    record written) and the product store in one of anyio's threads,
    untimed: on a mount gone silent the start waited there for ever, /readyz
    saying only "trying ...", no metric. Now each is timed as the inbox's
    making: parked as work_dir_hung or store_hung, and the start goes on once
    the mount answers, the lock taken once. (A real thread held until the
    test lets it go.)"""
    import os
    import threading

    from calstream.daemon.doers.start_waits import hung_or_disk_cause
    from calstream.daemon.doers.work_dir_lock import WorkDirLock

    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "max_attempts": 2,
                                    "retry_backoff": 0.01, "park_recheck_seconds": 0.05})
    w = StartWaits(cfg, Metrics(), read_seconds=0.2)
    lock, recorded = WorkDirLock(cfg.work_dir), []
    silent = getattr(cfg, root)
    answers, returned = threading.Event(), []
    real = os.mkdir

    def mkdir(path, *args, **kw):
        if os.fspath(path) == os.fspath(silent) and not answers.is_set():
            answers.wait(20)  # a bound for a broken test, not a measure
            returned.append(1)
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.step, "the work directory and product store",
                          lambda: w.roots_made(lock, lambda: recorded.append(1)),
                          hung_or_disk_cause)
            with anyio.fail_after(10):
                while parked(w, cause) < 1:
                    await anyio.sleep(0.02)
            [shown] = w.problems()
            assert shown.startswith(f"starting: waiting for the work directory and product "
                                    f"store ({cause})"), shown
            assert not returned, "parked while its mount is silent"
            answers.set()  # the mount answers
        assert cfg.work_dir.is_dir() and cfg.products.is_dir() and lock.held
        assert parked(w, cause) == 0 and w.problems() == ["starting"]
        assert recorded and all(recorded)
    finally:
        answers.set()
        lock.release()
