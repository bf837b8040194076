"""Previews after a product is committed: run in a calibration worker (they read
FITS files and draw), after the product event is out, and never an error of
the run: a preview that cannot be made is a warning, the product stands."""

from __future__ import annotations

import logging

from calstream.daemon.doers.preview_gate import PreviewGate
from calstream.daemon.doers.worker_pool import WorkerPool
from calstream.daemon.operations import logs
from calstream.steps.previews.naming import planned_previews

log = logging.getLogger("calstream.previews")

PREVIEW_TASK = "calstream.steps.previews.make:make_previews"
PREVIEW_TIMEOUT = 120.0
# Behind every calibration, live (0) and replayed (1): a picture never delays
# a product. And, given a gate, only once its pool has no calibration in
# flight (preview_gate.py): a picture never takes a core from a product.
PREVIEW_PRIORITY = 2

__all__ = ["make_previews", "planned_previews"]


async def make_previews(pool: WorkerPool, previews: list[dict], log_context: dict,
                        gate: PreviewGate | None = None) -> dict:
    """Make the previews a product event listed; {"made": [...], "failed": {...}}."""
    if not previews:
        return {"made": [], "failed": {}}
    if gate is not None:
        await gate.until_no_calibration()
    try:
        outcome = await pool.run(PREVIEW_TASK, {"previews": previews}, timeout=PREVIEW_TIMEOUT,
                                 env=logs.task_env(**log_context), priority=PREVIEW_PRIORITY)
    except Exception as exc:  # noqa: BLE001 - a lost worker included: the product stands
        log.warning("previews not made: %s: %s", type(exc).__name__, exc, extra=log_context)
        return {"made": [], "failed": {"*": str(exc)}}
    if outcome.failure is not None:
        log.warning("previews not made: %s: %s", outcome.failure.error_type,
                    outcome.failure.message, extra=log_context)
        return {"made": [], "failed": {"*": outcome.failure.message}}
    result = outcome.value
    for name, why in result["failed"].items():
        log.warning("no preview of %s: %s", name, why, extra=log_context)
    return result
