"""Previews after a product is committed: run in a calibration worker (they read
FITS files and draw), after the product event is out, and never an error of
the run: a preview that cannot be made is a warning, the product stands.
Kept pending in the store until drawn, so that a stop before then does not
lose them (pending_previews.py)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import anyio

from calstream.daemon.doers.pending_previews import PendingPreviews
from calstream.daemon.doers.preview_gate import PreviewGate
from calstream.daemon.doers.work_item_runs import solitude
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

__all__ = ["Previews", "make_previews", "planned_previews"]


async def make_previews(pool: WorkerPool, previews: list[dict], log_context: dict,
                        gate: PreviewGate | None = None, *, alone: bool = False,
                        began: Callable[[bool], None] | None = None,
                        metrics: Any = None) -> dict:
    """Make the previews a product event listed; {"made": [...], "failed": {...}}.
    ``alone``: a suspect's (pending_previews.py), drawn alone; ``began(alone)``
    is called on the loop as the drawing is given a worker; ``metrics``:
    the stage's (its runs waiting on a suspect)."""
    if not previews:
        return {"made": [], "failed": {}}
    if gate is not None:
        await gate.until_no_calibration()
    try:
        # A run in a worker as a calibration's is (work_item_runs.Solitude):
        # it waits while a suspect runs alone, and a suspect waits for it.
        # Beside a suspect, a container's end the preview caused was blamed
        # on the suspect's run, marked "alone". No await unless a suspect
        # runs or waits: the gate's last look still holds as the pool is asked.
        async with solitude().run(alone=alone, metrics=metrics, stage=pool.stage,
                                  name=f"previews of {log_context.get('exposure_id')}"):
            outcome = await pool.run(PREVIEW_TASK, {"previews": previews},
                                     timeout=PREVIEW_TIMEOUT, env=logs.task_env(**log_context),
                                     priority=PREVIEW_PRIORITY,
                                     started=began and (lambda: began(alone)))
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


class Previews:
    """One stage's previews: kept pending at the commit, drawn after the
    product event (behind the gate), and taken up from daemons that stopped
    before drawing theirs."""

    def __init__(self, pool: WorkerPool, pending: PendingPreviews, metrics: Any, *,
                 max_wait: float, heartbeat_seconds: float):
        self.pool, self.pending, self.metrics = pool, pending, metrics
        self.gate = PreviewGate(max_wait=max_wait, metrics=metrics, stage=pool.stage)
        self.heartbeat_seconds = heartbeat_seconds

    @contextlib.contextmanager
    def kept(self, event_id: str, outputs: list[dict], log_context: dict,
             listed: bool) -> Iterator[None]:
        """Around the product's record, in the commit's thread: the entry of
        the previews it ``listed`` written before the record (a stop from
        then on does not lose them), and removed if the record could not be
        written (the commit is tried again, or given up: nothing to draw)."""
        if listed:
            self.pending.add(event_id, [o["path"] for o in outputs], log_context)
        try:
            yield
        except BaseException:
            if listed:
                self.pending.done(event_id)
            raise

    async def draw(self, event_id: str, previews: list[dict], log_context: dict, *,
                   gated: bool = True) -> dict:
        """Draw, then drop the entry; a stop (cancellation) leaves it for the
        next daemon of the stage. Its drawing's start in a worker is marked
        beside it; a suspect's is drawn alone (pending_previews.py)."""
        try:
            result = await make_previews(self.pool, previews, log_context,
                                         self.gate if gated else None,
                                         alone=event_id in self.pending.suspects,
                                         began=lambda alone: self.pending.began(event_id, alone),
                                         metrics=self.metrics)
        except BaseException:  # cancelled (a stop): not cut short, its mark goes
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.pending.unmark, event_id)
            raise
        await anyio.to_thread.run_sync(self.pending.done, event_id)
        return result

    async def keep_up(self, background: Any) -> None:
        """For the stage's life: beat this daemon's entries' heartbeat, and
        start drawing those of gone daemons (at once, then at each beat)."""
        try:
            while True:
                await anyio.to_thread.run_sync(self.pending.beat)
                try:
                    adopted, refused = await anyio.to_thread.run_sync(self.pending.adopt)
                except Exception as exc:  # noqa: BLE001 - never the stage's end: a beat later
                    log.warning("pending previews not looked at: %s: %s", type(exc).__name__, exc)
                    adopted, refused = [], 0
                stage = self.pool.stage
                if refused:
                    self.metrics.previews_adopted.labels(stage=stage, outcome="refused").inc(refused)
                for event_id, previews, context in adopted:
                    self.metrics.previews_adopted.labels(stage=stage, outcome="resumed").inc()
                    log.info("previews of %s taken up from a daemon that stopped before "
                             "drawing them", context.get("exposure_id") or event_id[:12],
                             extra=context)
                    background.start_soon(self.draw, event_id, previews, context)
                await anyio.sleep(self.heartbeat_seconds)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.pending.close)
