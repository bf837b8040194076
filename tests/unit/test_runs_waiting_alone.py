"""Runs that wait for a suspect's turn alone (work_item_runs.Solitude) are
counted on ``calstream_runs_waiting_alone`` and named by `calstream status`.
Before, after a crash that left many suspects, each ran alone while the
others waited: /readyz failed and CalstreamConsumerStalled fired, and
nothing said why. A real runner and real worker processes (tiny tasks)."""

import anyio
import pytest

from calstream.daemon.doers.work_item_runs import solitude
from calstream.daemon.operations.metrics import Metrics
from calstream.daemon.operations.status_render import _stages
from calstream.daemon.operations.status_summary import Endpoint, summarise_metrics
from tests.unit.test_cut_short_runs import item, runner_and_pool


@pytest.fixture
def anyio_backend():
    return "asyncio"


def waiting(metrics: Metrics, run: str) -> float | None:
    return metrics.registry.get_sample_value("calstream_runs_waiting_alone",
                                             {"stage": "detector1", "run": run})


def status_line(metrics: Metrics) -> str:
    samples = [(s.name, s.labels, s.value) for family in metrics.registry.collect()
               for s in family.samples]
    stages = summarise_metrics([Endpoint("http://a:9310/metrics", reachable=True,
                                         samples=samples)])
    [line] = [line for line in _stages(stages, 0.0) if "detector1:" in line]
    return line


async def until(condition) -> None:
    with anyio.fail_after(60):  # a bound for a loaded machine, not a measure
        while not condition():
            await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_runs_waiting_for_a_suspect_s_run_alone_are_counted_and_shown(tmp_path):
    runner, pool = runner_and_pool(tmp_path, max_attempts=2, workers=2)
    metrics = runner.metrics
    began, gate = tmp_path / "began", tmp_path / "gate"
    runner.claims.directory.mkdir(parents=True)
    suspect = item("tests.pool_tasks:write_rate", {"name": item("x:y", {}, 1).name}, 1)
    (runner.claims.directory / f"{runner.work_id(suspect)}.v1.runs").write_text(
        '{"began": 1, "alone": false}')  # cut short beside another run
    pool.start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run, item("tests.pool_tasks:mark_then_wait",
                                           {"mark": str(began), "gate": str(gate)}, 0))
            await until(began.exists)  # a run in a worker: the suspect waits for its end
            tg.start_soon(runner.run, suspect)
            await until(lambda: waiting(metrics, "suspect") == 1)
            assert solitude().suspects == (("detector1", suspect.name, False),)  # for /readyz
            tg.start_soon(runner.run, item("tests.pool_tasks:write_rate",
                                           {"name": item("x:y", {}, 2).name}, 2))
            await until(lambda: waiting(metrics, "held_back") == 1)
            line = status_line(metrics)
            assert "waiting for a suspect's run alone: held_back 1, suspect 1" in line, line
            gate.touch()
    finally:
        gate.touch()
        pool.close()
    assert waiting(metrics, "suspect") == 0 and waiting(metrics, "held_back") == 0
    assert "waiting for a suspect" not in status_line(metrics)
    products = [m for topic, *m in runner.publisher.sent if topic == "products"]
    assert len(products) == 2, runner.publisher.sent  # the suspect's and the one behind it


@pytest.mark.anyio
async def test_readyz_names_the_suspects_that_hold_a_stage_back(tmp_path):
    """/readyz said a stage stalled and nothing of why: the gauge and
    `calstream status` count the runs waiting for a suspect's turn alone,
    but an operator paged for the stall needs the work that holds the stage
    back. Now its stall comes with the suspects named (a few, then how many
    more), running alone or waiting; a daemon that is ready stays ready
    (a suspect's run alone is progress). A real Solitude, runs held by the
    test."""
    import time

    from calstream.daemon.doers.work_item_runs import NAMED
    from calstream.daemon.operations.config import load
    from calstream.daemon.runtime import Daemon
    from tests.unit.test_health import idle_consumer

    daemon = Daemon(load(None, env={}, flags={"work_dir": tmp_path}))
    daemon.start_waits.done = True  # every role runs
    daemon.solitude = own = solitude()
    names = [f"jw01234001001_02101_0000{n}_nrca1" for n in range(NAMED + 2)]
    ends = {name: anyio.Event() for name in ["beside", *names]}

    async def run(name: str) -> None:
        async with own.run(alone=name != "beside", stage="detector1", name=name):
            await ends[name].wait()

    consumer = idle_consumer(60.0)
    daemon.consumers.append(consumer)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "beside")  # a run in a worker: the suspects wait for its end
        await until(lambda: own.shared == 1)
        for name in names:
            tg.start_soon(run, name)
        await until(lambda: own.waiting_alone == len(names))
        assert daemon.readiness() == (True, [])  # waiting, not stalled: nothing said
        consumer.started_at[1], consumer.in_flight = time.monotonic() - 61, 1  # stalled
        ready, problems = daemon.readiness()
        assert not ready and len(problems) == 2 and "detector1: 1 item(s)" in problems[0]
        said = problems[1]
        assert all(f"detector1 {name} (waiting)" in said for name in names[:NAMED]), said
        assert names[NAMED] not in said and said.endswith(", and 2 more"), said
        ends["beside"].set()  # the suspects' turns, one at a time
        await until(lambda: own.alone)
        [running] = [name for _, name, alone in own.suspects if alone]
        said = daemon.readiness()[1][1]
        assert f": detector1 {running} (running alone), " in said, said  # named first
        assert said.count("(waiting)") == NAMED - 1 and said.endswith(", and 2 more"), said
        for name in names:
            ends[name].set()
    assert own.suspects == () and daemon.readiness()[1][1:] == []
