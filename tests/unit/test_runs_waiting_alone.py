"""Runs that wait for a suspect's turn alone (work_item_runs.Solitude) are
counted on ``calstream_runs_waiting_alone`` and named by `calstream status`.
Before, after a crash that left many suspects, each ran alone while the
others waited: /readyz failed and CalstreamConsumerStalled fired, and
nothing said why. A real runner and real worker processes (tiny tasks)."""

import anyio
import pytest

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
