"""Running one work item, the same way for every stage.

A stage handler (detector1, stage 2, stage 3) decides *what* to run and with
which inputs; this module does the rest, identically for all of them: the
idempotency check against the product store, the warm-worker run with retries
of transient failures, the atomic publication of the outputs, and the product
event or dead letter.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from aiokafka.structs import ConsumerRecord

import calstream
from calstream.daemon.doers.kafka.bus import Bus
from calstream.daemon.doers.preview_runner import make_previews, planned_previews
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.worker_pool import WorkerLost, WorkerPool
from calstream.daemon.operations import logs
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.fitsfile import file_digest
from calstream.steps.provenance import jwst_version, work_id
from calstream.topics import contract

log = logging.getLogger("calstream.stage")


@dataclass
class WorkItem:
    stage: str  # "detector1" | "stage2" | "stage3"
    pipeline: str  # e.g. "calwebb_detector1"
    task: str  # "module:function" run in a worker, called with output_dir=...
    task_kwargs: dict[str, Any]
    program: str
    observation: str
    name: str  # product name: the exposure id for stages 1-2, the level-3 name for stage 3
    inputs: list[dict[str, Any]]  # {path, digest, size, role}
    parameters: dict[str, Any] = field(default_factory=dict)
    event_fields: dict[str, Any] = field(default_factory=dict)  # extra product-event fields
    arrived_at: str | None = None  # start of end-to-end latency
    key: str = ""  # message key, for dead letters
    record: ConsumerRecord | None = None
    # A replayed item's own context and output tree; None/"live": the daemon's.
    crds_context: str | None = None
    namespace: str = "live"
    priority: str = "live"  # "replay" waits behind every live item for a worker
    replay: dict[str, Any] | None = None  # the replay that asked for it, carried to the product
    version: int = 1  # >1: a stage-3 product superseding the previous version

    @property
    def log_context(self) -> dict[str, str]:
        return {"exposure_id": self.event_fields.get("exposure_id") or self.name,
                "stage": self.stage}


class StageRunner:
    def __init__(self, cfg: Config, *, bus: Bus, store: ProductStore, pool: WorkerPool,
                 metrics: Metrics, crds_context: str):
        self.cfg = cfg
        self.bus = bus
        self.store = store
        self.pool = pool
        self.metrics = metrics
        self.crds_context = crds_context

    def count(self, item: WorkItem, outcome: str) -> None:
        self.metrics.stage_runs.labels(stage=item.stage, pipeline=item.pipeline,
                                       outcome=outcome).inc()

    def context(self, item: WorkItem) -> str:
        return item.crds_context or self.crds_context

    def work_id(self, item: WorkItem) -> str:
        return work_id(pipeline=item.pipeline, input_digests=[i["digest"] for i in item.inputs],
                       crds_context=self.context(item), parameters=item.parameters,
                       namespace=item.namespace)

    async def run(self, item: WorkItem) -> None:
        wid = self.work_id(item)
        store = self.store.for_namespace(item.namespace)
        done = await anyio.to_thread.run_sync(
            lambda: store.lookup(item.program, item.observation, name=item.name,
                                 stage=item.stage, work_id=wid, version=item.version))
        if done is not None:
            # Already done: re-emit the same event (same event_id) so a subscriber
            # that missed it gets it and one that did not drops it.
            event = contract.Message("product", {**done.event, "emitted_at": contract.utc_now()})
            await self.bus.publish("products", item.program, event)
            self.count(item, "duplicate")
            log.info("%s: %s already done (work %s); product event re-emitted", item.name,
                     item.pipeline, wid[:12], extra=item.log_context)
            return
        await self._attempts(item, wid, store)

    async def _attempts(self, item: WorkItem, wid: str, store: ProductStore) -> None:
        run_log = store.log_path(item.program, item.observation, item.name, item.stage,
                                 item.version)
        attempts = 0
        while True:
            attempts += 1
            scratch = await anyio.to_thread.run_sync(
                store.scratch, item.program, item.observation, wid, item.version)
            log.info("%s: %s starting (attempt %d)", item.name, item.pipeline, attempts,
                     extra=item.log_context)
            outcome = None
            try:
                outcome = await self.pool.run(
                    item.task, {**item.task_kwargs, "output_dir": str(scratch)},
                    timeout=self.cfg.task_timeout, log_path=str(run_log),
                    env={"CRDS_CONTEXT": self.context(item),
                         **logs.task_env(**item.log_context, work_id=wid)},
                    priority=0 if item.priority == "live" else 1)
                failure = outcome.failure
                kind = failure.classification if failure else "success"
                detail = f"{failure.error_type}: {failure.message}" if failure else ""
            except WorkerLost as exc:
                kind, detail = "transient", str(exc)
            except BaseException:
                # Shutdown mid-run: leave no scratch behind (the record stays
                # uncommitted and is redone by whoever gets it next).
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(shutil.rmtree, scratch, True)
                raise
            if kind == "success":
                await self._publish(item, wid, scratch, outcome.value, run_log, store)
                return
            await anyio.to_thread.run_sync(shutil.rmtree, scratch, True)
            if kind == "skipped":
                await self._publish_skipped(item, wid, detail, run_log, store)
                return
            if kind == "transient" and attempts < self.cfg.max_attempts:
                delay = self.cfg.retry_backoff * 2 ** (attempts - 1)
                self.metrics.retries.labels(stage=item.stage, pipeline=item.pipeline).inc()
                log.warning("%s: transient failure (%s); retry %d/%d in %.1fs", item.name, detail,
                            attempts + 1, self.cfg.max_attempts, delay, extra=item.log_context)
                await anyio.sleep(delay)
                continue
            category = "retries_exhausted" if kind == "transient" else "permanent_failure"
            error_type = outcome.failure.error_type if outcome and outcome.failure else "WorkerLost"
            await self.bus.dead_letter(
                category=category, reason=f"{item.pipeline} failed: {detail}", stage=item.stage,
                key=item.key or item.name, attempts=attempts, record=item.record,
                exposure_id=item.event_fields.get("exposure_id"),
                path=item.inputs[0]["path"] if item.inputs else None,
                digest=item.inputs[0]["digest"] if item.inputs else None,
                log_path=str(run_log), error_type=error_type)
            self.count(item, "failed")
            return

    def _fields(self, item: WorkItem, wid: str, run_log: Path) -> dict[str, Any]:
        fields = dict(
            work_id=wid, stage=item.stage, pipeline=item.pipeline, program=item.program,
            observation=item.observation, product_name=item.name, inputs=item.inputs,
            calstream_version=calstream.__version__, arrived_at=item.arrived_at,
            namespace=item.namespace, replay=item.replay, version=item.version,
            supersedes=self._supersedes(item), log_path=str(run_log),
            pointing_quality="UNKNOWN", pointing_provisional=False,
        )
        fields.update(item.event_fields)
        return fields

    def _supersedes(self, item: WorkItem) -> str | None:
        """The product event of the newest earlier version still in the item's namespace."""
        store = self.store.for_namespace(item.namespace)
        for version in range(item.version - 1, 0, -1):
            done = store.lookup(item.program, item.observation, name=item.name,
                                stage=item.stage, version=version, verify=False)
            if done is not None:
                return done.event["event_id"]
        return None

    async def _publish(self, item: WorkItem, wid: str, scratch: Path, result: dict,
                       run_log: Path, store: ProductStore) -> None:
        final_dir = store.directory(item.program, item.observation, item.version)
        context = self.context(item)

        def describe_outputs() -> list[dict[str, Any]]:
            files = []
            for produced in sorted(Path(p) for p in result["outputs"]):
                files.append({"path": str(final_dir / produced.name),
                              "digest": file_digest(produced), "size": produced.stat().st_size,
                              "suffix": produced.stem.rsplit("_", 1)[-1]})
            return files

        outputs = await anyio.to_thread.run_sync(describe_outputs)
        # Listed now, made after the event (optional outputs: may never appear).
        previews = planned_previews([o["path"] for o in outputs])
        message = contract.build(
            "product", contract.event_id("product", wid, "success"),
            **self._fields(item, wid, run_log), outcome="success", reason=None, outputs=outputs,
            jwst_version=result["jwst_version"],
            crds_context=result["crds_context"] or context,
            duration_seconds=result["duration_seconds"],
            **({"previews": previews} if previews else {}))
        if result["crds_context"] and result["crds_context"] != context:
            log.warning("%s: pipeline used CRDS context %s, expected %s", item.name,
                        result["crds_context"], context, extra=item.log_context)
        await anyio.to_thread.run_sync(
            lambda: store.publish(scratch, item.program, item.observation, name=item.name,
                                  stage=item.stage, version=item.version,
                                       record={"work_id": wid, "event": message.body}))
        await self.bus.publish("products", item.program, message)
        self.count(item, "success")
        self.metrics.stage_duration.labels(stage=item.stage, pipeline=item.pipeline).observe(
            result["duration_seconds"])
        latency = None
        # A replayed item's arrival is days old: its "latency" is not the live one.
        if item.arrived_at and item.priority == "live":
            latency = max(0.0, time.time() - contract.parse_time(item.arrived_at).timestamp())
            self.metrics.latency.labels(stage=item.stage).observe(latency)
        log.info("%s: %s done in %.1fs (%s)%s%s", item.name, item.pipeline,
                 result["duration_seconds"], ", ".join(o["suffix"] for o in outputs),
                 f", {latency:.1f}s after arrival" if latency is not None else "",
                 "; pointing PLANNED: provisional quick-look" if message["pointing_provisional"]
                 else "", extra=item.log_context)
        await make_previews(self.pool, previews, {**item.log_context, "work_id": wid})

    async def _publish_skipped(self, item: WorkItem, wid: str, reason: str,
                               run_log: Path, store: ProductStore) -> None:
        message = contract.build(
            "product", contract.event_id("product", wid, "skipped"),
            **self._fields(item, wid, run_log), outcome="skipped", reason=reason, outputs=[],
            jwst_version=jwst_version(), crds_context=self.context(item), duration_seconds=None)
        await anyio.to_thread.run_sync(
            lambda: store.write_record(item.program, item.observation, name=item.name,
                                       stage=item.stage, version=item.version,
                                            record={"work_id": wid, "event": message.body}))
        await self.bus.publish("products", item.program, message)
        self.count(item, "skipped")
        log.info("%s: no science data (%s): skipped product event", item.name, reason,
                 extra=item.log_context)
