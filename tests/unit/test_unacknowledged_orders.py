"""The planner's work orders, sent without waiting for each acknowledgement
(doers/planner_publishing.py, Unacknowledged): the positions of the records
they came from wait for them; one the broker did not take is sent again; a
fault that is no broker's is not swallowed.

The publisher here stands for the planner's GatedPublisher (no broker: what
is tested is the loop's bookkeeping around it; tests/integration/
test_planner_ha.py and test_planner_parking.py run it on a real broker).
"""

from __future__ import annotations

import asyncio

import anyio
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.topics import contract
from calstream.topics.catalog import Topics
from tests.integration.test_planner_ha import product_event

pytestmark = pytest.mark.anyio


class _Publisher:
    """``send`` hands back the acknowledgement's future, answered by the test;
    ``publish`` is the waited way (parked until done in the daemon)."""

    def __init__(self):
        self.answers: list[tuple[str, asyncio.Future]] = []
        self.published: list[str] = []

    async def send(self, topic, key, message):
        contract.encode(message)  # refuses what the real one refuses
        answered = asyncio.get_running_loop().create_future()
        self.answers.append((key, answered))
        return answered

    async def keep_redrives(self, record):  # no dead-letter ledger here
        pass

    async def publish(self, topic, key, message):
        contract.encode(message)
        self.published.append(key)
        return True


class _Record:
    def __init__(self, topic: str, offset: int, message: contract.Message):
        self.topic, self.partition, self.offset = topic, 0, offset
        self.value, self.key, self.timestamp = contract.encode(message), b"k", None


def _planner(tmp_path) -> tuple[Planner, _Publisher, str]:
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "companion_wait": 3600.0})
    publisher = _Publisher()
    planner = Planner(cfg, publisher=publisher, metrics=Metrics(), topics=Topics())
    planner.caught_up = True
    return planner, publisher, Topics().name("products")


def _orders_counted(planner: Planner) -> float:
    return planner.metrics.work_orders.labels(stage="stage2", degraded="false")._value.get()


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_positions_wait_for_the_orders_and_a_lost_one_is_sent_again(tmp_path):
    planner, publisher, products = _planner(tmp_path)
    events = [product_event(planner.cfg.products, planner.cfg.inbox, 4242, n, 3)
              for n in (1, 2, 3)]
    for offset, event in enumerate(events):
        await planner._on_record(_Record(products, offset, event))
    # Three stage-2 orders handed over, none waited for, none counted yet,
    # and no position moved: a snapshot now would cover none of the three.
    assert len(publisher.answers) == 3 and publisher.published == []
    assert planner.positions == {}
    assert planner.unacked.positions == {(products, 0): 3}
    assert _orders_counted(planner) == 0

    lost = publisher.answers[1][0]
    for key, answered in publisher.answers:
        if key == lost:
            answered.set_exception(KafkaTimeoutError())  # the broker did not answer
        else:
            answered.set_result(None)
    await planner._settle()
    assert publisher.published == [lost]  # sent again, the waited way
    assert planner.positions == {(products, 0): 3}
    assert not planner.unacked and planner.unacked.positions == {}
    assert _orders_counted(planner) == 3


async def test_a_send_refused_for_what_it_is_is_not_sent_again(tmp_path):
    planner, publisher, products = _planner(tmp_path)
    await planner._on_record(_Record(products, 0, product_event(
        planner.cfg.products, planner.cfg.inbox, 4243, 1, 2)))
    publisher.answers[0][1].set_exception(MessageSizeTooLargeError())
    with pytest.raises(MessageSizeTooLargeError):  # ends the task: a new planner rebuilds
        await planner._settle()
    assert publisher.published == []
    assert planner.positions == {}  # the record is read again by the next planner


async def test_records_after_an_unacknowledged_order_wait_with_it(tmp_path):
    """A record that sent nothing still may not move its partition's
    position past a record whose order is unacknowledged."""
    planner, publisher, products = _planner(tmp_path)
    cfg = planner.cfg
    await planner._on_record(_Record(products, 0, product_event(
        cfg.products, cfg.inbox, 4244, 1, 2)))
    again = product_event(cfg.products, cfg.inbox, 4244, 1, 2)  # a redelivery: no order
    await planner._on_record(_Record(products, 1, again))
    assert len(publisher.answers) == 1 and planner.positions == {}
    publisher.answers[0][1].set_result(None)
    with anyio.fail_after(5):
        await planner._settle()
    assert planner.positions == {(products, 0): 2}


def _calibrated(cfg, program: int, n: int, exposures: int, at: float) -> contract.Message:
    """Exposure ``n`` of a one-visit imaging program, calibrated by stage 2
    (its cal in the product store): a member of the visit's stage 3."""
    return product_event(cfg.products, cfg.inbox, program, n, exposures, stage="stage2", at=at)


class _Readings:
    """The host's wall and monotonic clocks, moved by hand."""

    def __init__(self):
        self.wall, self.mono = 1_900_000_000.0, 100.0


@pytest.mark.parametrize("step", [3600.0, -3600.0])
async def test_a_step_of_the_wall_clock_neither_closes_nor_stretches_a_stage3_wait(
        tmp_path, step):
    """Two of a visit's three exposures are in: its stage 3 waits for the
    quiet period (1800 s). The wall clock steps an hour forward: no incomplete
    stage 3 is ordered; an hour back: it is still ordered when the quiet
    period has passed on the host's monotonic clock."""
    from calstream.daemon.doers.planner_clock import PlannerClock

    r = _Readings()
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "companion_wait": 60.0,
                                     "stage3_quiet_period": 1800.0})
    publisher = _Publisher()
    metrics = Metrics()
    planner = Planner(cfg, publisher=publisher, metrics=metrics, topics=Topics(),
                      clock=PlannerClock(metrics, wall=lambda: r.wall,
                                         monotonic=lambda: r.mono))
    planner.caught_up = True
    products = Topics().name("products")
    for offset, n in enumerate((1, 2)):  # calibrated by stage 2, each
        await planner._on_record(_Record(products, offset, _calibrated(cfg, 4250, n, 3, r.wall)))
    assert publisher.answers == []  # imaging: stage 3 only, a tick's order (waited: published)

    async def second(wall_step: float = 0.0) -> None:  # what the loop does once a second
        r.mono += 1.0
        r.wall += 1.0 + wall_step
        planner.clock.check()
        await planner._tick(planner.state)

    await second(step)
    assert publisher.published == []  # the step closed nothing
    for _ in range(10):
        await second()
    assert publisher.published == []
    r.mono += 1800.0  # the quiet period, as the host's monotonic clock counts it
    r.wall += 1800.0
    await second()
    assert len(publisher.published) == 1  # now the (incomplete) stage 3 is due
