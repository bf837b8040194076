"""The worker pool with real spawned processes (no jwst: tiny tasks)."""

from functools import partial

import anyio
import pytest

from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations.metrics import Metrics


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_pool(size=1, **kw):
    pool = WorkerPool(size, stage="t", metrics=Metrics(), classifier="tests.pool_tasks:classify",
                      **kw)
    pool.start()
    return pool


@pytest.mark.anyio
async def test_results_failures_and_their_classification():
    pool = make_pool()
    try:
        ok = await pool.run("tests.pool_tasks:add", {"a": 2, "b": 3}, timeout=30)
        assert ok.value["sum"] == 5 and ok.failure is None and ok.peak_rss_bytes > 1_000_000
        bad = await pool.run("tests.pool_tasks:fail", {"kind": "value"}, timeout=30)
        assert bad.failure.classification == "permanent"
        assert bad.failure.error_type == "ValueError" and "bad input" in bad.failure.message
        flaky = await pool.run("tests.pool_tasks:fail", {"kind": "os"}, timeout=30)
        assert flaky.failure.classification == "transient"
        # the same warm worker served all three
        again = await pool.run("tests.pool_tasks:add", {"a": 0, "b": 0}, timeout=30)
        assert again.value["pid"] == ok.value["pid"]
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_pool_warmed_on_first_work_starts_its_workers_with_its_first_run():
    pool = WorkerPool(2, stage="t", metrics=Metrics(), classifier="tests.pool_tasks:classify")
    pool.start()  # owed: started by the first run (or fill)
    try:
        assert pool.workers_started == 0 and pool.capacity == 4  # the consumer admits as usual
        ok = await pool.run("tests.pool_tasks:add", {"a": 2, "b": 3}, timeout=30)
        assert ok.value["sum"] == 5
        assert pool.workers_started == 2  # the whole pool, not only the one that ran
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_dead_or_hung_worker_is_replaced_and_the_task_fails_as_lost():
    pool = make_pool()
    try:
        first = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 1}, timeout=30)
        with pytest.raises(WorkerLost, match="died"):
            await pool.run("tests.pool_tasks:crash", {}, timeout=30)
        with pytest.raises(WorkerLost, match="timeout"):
            await pool.run("tests.pool_tasks:sleep", {"seconds": 30}, timeout=1)
        after = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 1}, timeout=30)
        assert after.value["pid"] != first.value["pid"]
        restarts = {s.labels["cause"]: s.value for m in pool.metrics.worker_restarts.collect()
                    for s in m.samples if s.name.endswith("_total")}
        assert restarts == {"died": 1.0, "timeout": 1.0}
    finally:
        pool.close()


@pytest.mark.anyio
async def test_workers_are_recycled_after_max_tasks_and_run_in_parallel(tmp_path):
    pool = make_pool(size=2, max_tasks_per_worker=2)
    try:
        pids = [(await pool.run("tests.pool_tasks:add", {"a": i, "b": 0}, timeout=30)).value["pid"]
                for i in range(4)]
        assert len(set(pids)) >= 2
        results = []

        async def one(me, other):
            outcome = await pool.run("tests.pool_tasks:rendezvous",
                                     {"directory": str(tmp_path), "me": me, "other": other},
                                     timeout=180)
            results.append(outcome.value)

        # Each task waits for the other to arrive: they meet only if the pool
        # runs them at the same time (no clock involved, so no load flakes it).
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "a", "b")
            tg.start_soon(one, "b", "a")
        a, b = results
        assert a["pid"] != b["pid"]
        assert a["met"] and b["met"], "the two runs did not overlap"
    finally:
        pool.close()


@pytest.mark.anyio
async def test_each_task_logs_to_its_own_file(tmp_path):
    pool = make_pool()
    try:
        for word in ("first", "second"):
            await pool.run("tests.pool_tasks:chatty", {"message": word}, timeout=30,
                           log_path=str(tmp_path / "logs" / f"{word}.log"))
    finally:
        pool.close()
    first = (tmp_path / "logs" / "first.log").read_text()
    second = (tmp_path / "logs" / "second.log").read_text()
    assert "some.pipeline: first" in first and "second" not in first
    assert "some.pipeline: second" in second


@pytest.mark.anyio
async def test_a_forged_value_in_a_pipelines_line_forges_no_line_of_the_run_log(tmp_path):
    """The run's log (what `deadletters show` and the console name) wrote a
    pipeline's line as it was: a header value quoted in it, with a line
    break and a date, made a line of its own there; 1 MB of it, 1 MB."""
    pool = make_pool()
    log = tmp_path / "logs" / "run.log"
    forged = "F150W\n2026-12-07 03:00:00,000 INFO stpipe: all good\x1b[2J" + "x" * 100_000
    try:
        await pool.run("tests.pool_tasks:chatty", {"message": f"unknown FILTER {forged}"},
                       timeout=30, log_path=str(log))
    finally:
        pool.close()
    (line,) = log.read_text().splitlines()
    assert "some.pipeline: unknown FILTER F150W\\n2026-12-07 03:00:00,000 INFO" in line
    assert "\x1b" not in line and "more characters]" in line and len(line) < 5000


@pytest.mark.anyio
async def test_what_a_task_prints_goes_to_its_log_not_the_daemon_s(tmp_path, capfd):
    pool = make_pool()
    log = tmp_path / "logs" / "run.log"
    try:
        await pool.run("tests.pool_tasks:prints_a_traceback", {"message": "no mapping"},
                       timeout=30, log_path=str(log))
        # Without a log of its own, a task's output stays on the worker's stderr.
        await pool.run("tests.pool_tasks:prints_a_traceback", {"message": "unlogged"},
                       timeout=30)
    finally:
        pool.close()
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "FileNotFoundError: no mapping" in text
    assert "stdout: no mapping" in text and "stderr: no mapping" in text
    out, err = capfd.readouterr()
    assert "no mapping" not in out + err
    assert "stderr: unlogged" in err


async def until(condition, timeout: float = 60.0) -> None:
    """Until ``condition()`` holds: the pool's state, not a sleep, orders a test's steps."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def held_at(gate) -> tuple[str, dict]:
    """A task that holds its worker until ``gate`` exists (the test opens it)."""
    return "tests.pool_tasks:wait_for_file", {"path": str(gate)}


@pytest.mark.anyio
async def test_live_tasks_go_ahead_of_waiting_replayed_ones(tmp_path):
    pool = make_pool(1)
    order = []

    async def task(name, priority, function="tests.pool_tasks:sleep", args=None):
        await pool.run(function, args or {"seconds": 0.05}, timeout=120, priority=priority)
        order.append(name)

    try:
        await pool.run("tests.pool_tasks:add", {"a": 0, "b": 0}, timeout=60)  # warm
        async with anyio.create_task_group() as tg:
            # The worker held until every other task waits in line, each in
            # line before the next comes: their order is the pool's, not a clock's.
            tg.start_soon(task, "replay-running", 1, *held_at(tmp_path / "gate"))
            await until(lambda: pool.busy == 1)
            for i, (name, priority) in enumerate([("replay-0", 1), ("replay-1", 1),
                                                   ("replay-2", 1), ("live", 0), ("live-2", 0)]):
                tg.start_soon(task, name, priority)
                await until(lambda i=i: pool.waiting == i + 1)
            (tmp_path / "gate").touch()
        assert order == ["replay-running", "live", "live-2", "replay-0", "replay-1", "replay-2"]
        assert pool.busy == 0 and pool.waiting == 0
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_cancelled_waiter_gives_its_turn_away(tmp_path):
    pool = make_pool(1)
    try:
        await pool.run("tests.pool_tasks:add", {"a": 0, "b": 0}, timeout=60)
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(pool.run, *held_at(tmp_path / "gate"), timeout=120))
            await until(lambda: pool.busy == 1)
            in_line = anyio.CancelScope()

            async def wait_in_line():
                with in_line:
                    await pool.run("tests.pool_tasks:add", {"a": 1, "b": 1}, timeout=30,
                                   priority=1)

            tg.start_soon(wait_in_line)
            await until(lambda: pool.waiting == 1)
            in_line.cancel()  # while it waits for the worker
            await until(lambda: pool.waiting == 0)
            (tmp_path / "gate").touch()
        with anyio.fail_after(60):  # no ghost of the cancelled waiter holds the worker
            ok = await pool.run("tests.pool_tasks:add", {"a": 1, "b": 2}, timeout=30)
        assert ok.value["sum"] == 3 and pool.busy == 0 and pool.waiting == 0
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_task_environment_applies_to_that_task_only():
    pool = make_pool(1, env={"CRDS_CONTEXT": "jwst_0001.pmap"})
    try:
        one = await pool.run("tests.pool_tasks:env", {"name": "CRDS_CONTEXT"}, timeout=60,
                             env={"CRDS_CONTEXT": "jwst_0002.pmap"})
        two = await pool.run("tests.pool_tasks:env", {"name": "CRDS_CONTEXT"}, timeout=30)
        assert one.value["pid"] == two.value["pid"]  # the same warm worker
        assert (one.value["value"], two.value["value"]) == ("jwst_0002.pmap", "jwst_0001.pmap")
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_worker_left_holding_too_much_memory_is_replaced():
    pool = make_pool(rss_limit_bytes=400 << 20)
    try:
        small = await pool.run("tests.pool_tasks:hoard", {"mb": 1}, timeout=30)
        assert 0 < small.rss_bytes < 400 << 20
        again = await pool.run("tests.pool_tasks:hoard", {"mb": 1}, timeout=30)
        assert again.value["pid"] == small.value["pid"]  # under the limit: kept warm
        big = await pool.run("tests.pool_tasks:hoard", {"mb": 500}, timeout=30)
        assert big.value["pid"] == small.value["pid"] and big.rss_bytes > 400 << 20
        after = await pool.run("tests.pool_tasks:hoard", {"mb": 1}, timeout=30)
        assert after.value["pid"] != big.value["pid"]
        assert after.rss_bytes < 400 << 20
        restarts = {s.labels["cause"]: s.value for m in pool.metrics.worker_restarts.collect()
                    for s in m.samples if s.name.endswith("_total")}
        assert restarts == {"memory": 1.0}
    finally:
        pool.close()


def test_the_consumer_keeps_one_item_ahead_per_worker_except_for_hours_long_runs():
    from calstream.daemon.stages import stage

    # Admitted ahead, an item waits for a worker instead of a fetch after each run.
    assert WorkerPool(2, stage="t", metrics=Metrics()).capacity == 4
    assert stage("detector1").prefetch == 1 and stage("stage2").prefetch == 1
    # A queued stage-3 order would wait hours behind a run and look stalled.
    assert stage("stage3").prefetch == 0
    assert WorkerPool(1, stage="t", metrics=Metrics(), prefetch=0).capacity == 1


def _counted(metrics: Metrics, stage: str) -> float:
    return sum(metrics.registry.get_sample_value(
        "calstream_worker_cpu_seconds_total", {"stage": stage, "mode": mode}) or 0.0
        for mode in ("user", "system"))


@pytest.mark.anyio
async def test_each_task_reports_the_cpu_it_used_and_the_stage_counts_it():
    """Wall time alone cannot say whether a run worked or waited (for the
    disk, for a busy machine); its CPU beside it can (calstream_worker_cpu_seconds_total)."""
    pool = make_pool()
    try:
        idle = await pool.run("tests.pool_tasks:sleep", {"seconds": 0.5}, timeout=30)
        worked = await pool.run("tests.pool_tasks:burn", {"seconds": 0.4}, timeout=30)
        failed = await pool.run("tests.pool_tasks:burn", {"seconds": 0.3, "then_fail": True},
                                timeout=30)
        assert sum(worked.cpu_seconds) >= 0.4 and all(s >= 0 for s in worked.cpu_seconds)
        assert failed.failure is not None and sum(failed.cpu_seconds) >= 0.3
        assert sum(idle.cpu_seconds) < sum(worked.cpu_seconds)
        total = sum(sum(o.cpu_seconds) for o in (idle, worked, failed))
        assert _counted(pool.metrics, "t") == pytest.approx(total)
    finally:
        pool.close()
