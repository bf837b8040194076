"""What `calstream_stage_runs_total` counts when a run's product event could
not be sent at once: the run succeeded when its products were committed, and
the later re-emission is a duplicate of it. Until session 15 such a run was
counted only as `duplicate` (success was counted after the event's
acknowledgement), so a broker outage made successful runs vanish from the
success rate. Real worker processes (tiny tasks, no jwst)."""

import anyio
import pytest

from tests.recording_bus import RecordingBus
from tests.unit.test_runner_recheck import _runner_and_item, _runs


@pytest.fixture
def anyio_backend():
    return "asyncio"


class _BrokerGone(Exception):
    pass


class _BusDownOnce(RecordingBus):
    """The first product event is not acknowledged (the broker went away)."""

    def __init__(self):
        super().__init__()
        self.down = True

    async def publish(self, topic, key, message):
        if self.down:
            self.down = False
            raise _BrokerGone("no acknowledgement")
        await super().publish(topic, key, message)


@pytest.mark.anyio
async def test_a_run_whose_event_went_out_late_counts_as_a_success(tmp_path):
    metrics, _, store, pool, runner, item = _runner_and_item(tmp_path)
    bus = runner.publisher = _BusDownOnce()
    try:
        with anyio.fail_after(60):
            # committed, its event refused (raised out of the claim's task group)
            with pytest.raises(ExceptionGroup) as refused:
                await runner.run(item)
            assert refused.group_contains(_BrokerGone)
            await runner.run(item)  # the record handed over again: found done
    finally:
        pool.close()
    assert [topic for topic, _ in bus.sent] == ["products"]  # the event, once, late
    assert _runs(metrics) == {"success": 1.0, "duplicate": 1.0}
