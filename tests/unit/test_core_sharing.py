"""Several cores for one run (jwst's maximum_cores): the decision, the pool's
part, and that a worker's own children die with it."""

import anyio
import pytest

from calstream.daemon.deciders.core_sharing import cores_for_run
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.detector1 import with_cores
from tests.processes import alive

BIG = dict(input_bytes=100 << 20, min_bytes=32 << 20)


def test_idle_cores_go_to_a_large_run_only_when_nothing_waits():
    assert cores_for_run(free_cores=2, waiting=0, cap=2, **BIG) == 2
    assert cores_for_run(free_cores=4, waiting=0, cap=2, **BIG) == 2  # the cap
    assert cores_for_run(free_cores=1, waiting=0, cap=4, **BIG) == 1  # only its own
    assert cores_for_run(free_cores=2, waiting=1, cap=2, **BIG) == 1  # another item waits
    assert cores_for_run(free_cores=2, waiting=0, cap=1, **BIG) == 1  # turned off
    assert cores_for_run(free_cores=2, waiting=0, cap=2, input_bytes=1 << 20,
                         min_bytes=32 << 20) == 1  # small: stcal's start-up costs more


def test_cores_reach_jump_and_ramp_fit_unless_the_operator_set_them():
    assert with_cores({"jump": {"rejection_threshold": 5}}, 1) == {
        "jump": {"rejection_threshold": 5}}
    assert with_cores({"jump": {"maximum_cores": "1"}}, 2) == {
        "jump": {"maximum_cores": "1"}, "ramp_fit": {"maximum_cores": "2"}}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_the_pool_lends_free_cores_and_takes_them_back():
    pool = WorkerPool(2, stage="t", metrics=Metrics())
    pool.start()
    seen = []

    def share(free, waiting):
        seen.append((free, waiting))
        return free

    try:
        outcome = await pool.run("tests.pool_tasks:cores_given", {}, timeout=60,
                                 share_cores=share)
        assert outcome.value["cores"] == 2 and outcome.cores == 2 and seen == [(2, 0)]
        assert pool.free_cores == 2
        plain = await pool.run("tests.pool_tasks:cores_given", {}, timeout=60)
        assert plain.value["cores"] == 1 and plain.cores == 1
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_workers_children_die_with_it(tmp_path):
    """Workers may start processes (stcal's pools); a killed worker (here: its
    task cancelled) takes them along, as a SIGKILLed daemon takes its workers."""
    pool = WorkerPool(1, stage="t", metrics=Metrics())
    pool.start()
    pid_file = tmp_path / "child.pid"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: pool.run("tests.pool_tasks:start_child_and_hang",
                                           {"pid_file": str(pid_file)}, timeout=600))
            while not pid_file.exists() or not pid_file.read_text():
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()  # the worker is killed (SIGKILL)
    finally:
        pool.close()
    child = int(pid_file.read_text())
    # A bound for a loaded machine, not a measure: the child sleeps 600 s, so
    # one that outlived its worker is still there after it. (400 x 0.05 s
    # ran out once in a full unit run beside other tests, session 41.)
    with anyio.move_on_after(120):
        while alive(child):
            await anyio.sleep(0.05)
    assert not alive(child), "the worker's child outlived it"
