"""How many cores one calibration run may use (jwst's ``maximum_cores``).

A run normally has one core: its worker's. When nothing waits for a worker
and some workers are idle, their cores would do nothing; jump detection and
ramp fitting can then split the exposure's rows over several processes
(stcal) and finish it sooner. The split changes no product byte (shown by
tests/integration/test_multicore_identity.py), so the choice stays out of
the work id.

Lending is only worth it for large exposures: stcal starts a fresh process
pool in each of the two steps, ≈ 1 s of start-up on a loaded machine, more
than a whole small-subarray run.
"""

from __future__ import annotations


def cores_for_run(*, free_cores: int, waiting: int, cap: int, input_bytes: int,
                  min_bytes: int) -> int:
    """Cores for a run about to start.

    ``free_cores``: the pool's cores no run is using, this run's own included;
    ``waiting``: items queued for a worker behind this one; ``cap``: the
    configured most (``max_cores_per_exposure``; 1 turns sharing off);
    ``input_bytes``: the run's input size; ``min_bytes``: below it, one core.
    """
    if cap <= 1 or waiting > 0 or input_bytes < min_bytes:
        return 1
    return max(1, min(cap, free_cores))
