"""Detector1 for every arrival: raw -> rate/rateints products and a product event."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
from aiokafka.structs import ConsumerRecord

import calstream
from calstream.steps.fitsfile import file_digest
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.steps.provenance import jwst_version, work_id
from calstream.topics import contract

from .bus import Bus
from .config import Config
from .metrics import Metrics
from .pool import WorkerLost, WorkerPool
from .store import ProductStore

log = logging.getLogger("calstream.detector1")

STAGE = "detector1"
PIPELINE = "calwebb_detector1"
TASK = "calstream.steps.detector1:run_detector1"


class Detector1Stage:
    def __init__(self, cfg: Config, *, bus: Bus, store: ProductStore, pool: WorkerPool,
                 metrics: Metrics, crds_context: str):
        self.cfg = cfg
        self.bus = bus
        self.store = store
        self.pool = pool
        self.metrics = metrics
        self.crds_context = crds_context

    def _count(self, outcome: str) -> None:
        self.metrics.stage_runs.labels(stage=STAGE, pipeline=PIPELINE, outcome=outcome).inc()

    async def handle(self, record: ConsumerRecord) -> None:
        key = record.key.decode("utf-8", "replace") if record.key else ""
        try:
            arrival = contract.decode(record.value, expected="arrival")
        except contract.InvalidMessage as exc:
            await self.bus.dead_letter(category="invalid_message", reason=str(exc), stage=STAGE,
                                       key=key, record=record)
            self._count("failed")
            return
        exposure_id = arrival["exposure_id"]
        ctx = {"exposure_id": exposure_id, "stage": STAGE}
        problem = self._check_input(arrival)
        if problem:
            await self.bus.dead_letter(category="bad_input", reason=problem, stage=STAGE, key=key,
                                       record=record, exposure_id=exposure_id,
                                       path=arrival["path"], digest=arrival["digest"])
            self._count("failed")
            return
        path = Path(arrival["path"])
        name = parse_exposure_name(exposure_id)
        current = await anyio.to_thread.run_sync(file_digest, path)
        if current != arrival["digest"]:
            # The inbox file was replaced (a corrected redelivery); the new
            # content has an arrival of its own, so this one is stale.
            log.info("%s: file changed since this arrival was announced; skipping stale arrival",
                     exposure_id, extra=ctx)
            self._count("stale")
            return
        wid = work_id(pipeline=PIPELINE, input_digests=[current], crds_context=self.crds_context,
                      parameters={"steps": self.cfg.detector1_steps})
        done = await anyio.to_thread.run_sync(
            lambda: self.store.lookup(name.program, name.observation, name=exposure_id,
                                      stage=STAGE, work_id=wid))
        if done is not None:
            # Already calibrated: re-emit the same event (same event_id) so a
            # subscriber that missed it gets it and one that did not drops it.
            event = contract.Message("product", {**done.event, "emitted_at": contract.utc_now()})
            await self.bus.publish("products", name.program, event)
            self._count("duplicate")
            log.info("%s: already calibrated (work %s); product event re-emitted",
                     exposure_id, wid[:12], extra=ctx)
            return
        await self._calibrate(record, key, arrival, name, wid, ctx)

    def _check_input(self, arrival: contract.Message) -> str | None:
        try:
            name = parse_exposure_name(arrival["exposure_id"])
        except BadName as exc:
            return str(exc)
        path = Path(arrival["path"])
        if not path.is_absolute():
            return f"path {path} is not absolute"
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root.resolve()) for root in self.cfg.allowed_roots):
            return (f"path {path} is outside the allowed roots "
                    f"({', '.join(str(r) for r in self.cfg.allowed_roots)})")
        if not resolved.is_file():
            return f"input file {path} does not exist (removed from the inbox?)"
        if parse_exposure_name(path.name).exposure_id != name.exposure_id:
            return f"file name {path.name} does not match exposure id {name.exposure_id}"
        return None

    async def _calibrate(self, record, key, arrival, name, wid, ctx) -> None:
        exposure_id = arrival["exposure_id"]
        run_log = self.store.log_path(name.program, name.observation, exposure_id, STAGE)
        attempts = 0
        while True:
            attempts += 1
            scratch = await anyio.to_thread.run_sync(
                self.store.scratch, name.program, name.observation, wid)
            log.info("%s: detector1 starting (attempt %d)", exposure_id, attempts, extra=ctx)
            try:
                outcome = await self.pool.run(
                    TASK, {"input_path": arrival["path"], "output_dir": str(scratch),
                           "steps": self.cfg.detector1_steps},
                    timeout=self.cfg.task_timeout, log_path=str(run_log))
                failure = outcome.failure
                kind = failure.classification if failure else "success"
                detail = f"{failure.error_type}: {failure.message}" if failure else ""
            except WorkerLost as exc:
                outcome, kind, detail = None, "transient", str(exc)
            if kind == "success":
                await self._publish(arrival, name, wid, scratch, outcome, ctx)
                return
            await anyio.to_thread.run_sync(_remove_tree, scratch)
            if kind == "skipped":
                await self._publish_skipped(arrival, name, wid, detail, ctx)
                return
            if kind == "transient" and attempts < self.cfg.max_attempts:
                delay = self.cfg.retry_backoff * 2 ** (attempts - 1)
                self.metrics.retries.labels(stage=STAGE, pipeline=PIPELINE).inc()
                log.warning("%s: transient failure (%s); retry %d/%d in %.1fs", exposure_id,
                            detail, attempts + 1, self.cfg.max_attempts, delay, extra=ctx)
                await anyio.sleep(delay)
                continue
            category = "retries_exhausted" if kind == "transient" else "permanent_failure"
            await self.bus.dead_letter(
                category=category, reason=f"detector1 failed: {detail}", stage=STAGE, key=key,
                attempts=attempts, record=record, exposure_id=exposure_id, path=arrival["path"],
                digest=arrival["digest"], log_path=str(run_log),
                error_type=outcome.failure.error_type if outcome and outcome.failure else "WorkerLost")
            self._count("failed")
            return

    def _event_fields(self, arrival: contract.Message, name, wid: str) -> dict[str, Any]:
        header = arrival["header"]
        quality = str(header.get("ENGQLPTG", "UNKNOWN"))
        return dict(
            work_id=wid, stage=STAGE, pipeline=PIPELINE, program=name.program,
            observation=name.observation, visit=name.visit, exposure_id=arrival["exposure_id"],
            product_name=arrival["exposure_id"], instrument=header.get("INSTRUME"),
            exp_type=header.get("EXP_TYPE"), header=header,
            inputs=[{"path": arrival["path"], "digest": arrival["digest"],
                     "size": arrival["size"], "role": "uncal"}],
            calstream_version=calstream.__version__, arrived_at=arrival["detected_at"],
            pointing_quality=quality, pointing_provisional=quality == "PLANNED",
            namespace="live", version=1, supersedes=None,
            log_path=str(self.store.log_path(name.program, name.observation,
                                             arrival["exposure_id"], STAGE)),
        )

    async def _publish(self, arrival, name, wid, scratch: Path, outcome, ctx) -> None:
        result = outcome.value
        final_dir = self.store.directory(name.program, name.observation)

        def describe_outputs() -> list[dict[str, Any]]:
            files = []
            for produced in sorted(Path(p) for p in result["outputs"]):
                files.append({"path": str(final_dir / produced.name),
                              "digest": file_digest(produced), "size": produced.stat().st_size,
                              "suffix": produced.stem.rsplit("_", 1)[-1]})
            return files

        outputs = await anyio.to_thread.run_sync(describe_outputs)
        message = contract.build(
            "product", contract.event_id("product", wid, "success"),
            **self._event_fields(arrival, name, wid), outcome="success", reason=None,
            outputs=outputs, jwst_version=result["jwst_version"],
            crds_context=result["crds_context"], duration_seconds=result["duration_seconds"])
        if result["crds_context"] != self.crds_context:
            log.warning("%s: pipeline used CRDS context %s, expected %s", arrival["exposure_id"],
                        result["crds_context"], self.crds_context, extra=ctx)
        await anyio.to_thread.run_sync(
            lambda: self.store.publish(scratch, name.program, name.observation,
                                       name=arrival["exposure_id"], stage=STAGE,
                                       record={"work_id": wid, "event": message.body}))
        await self.bus.publish("products", name.program, message)
        self._count("success")
        self.metrics.stage_duration.labels(stage=STAGE, pipeline=PIPELINE).observe(
            result["duration_seconds"])
        latency = time.time() - contract.parse_time(arrival["detected_at"]).timestamp()
        self.metrics.latency.labels(stage=STAGE).observe(max(0.0, latency))
        log.info("%s: detector1 done in %.1fs (%s), %.1fs after arrival%s",
                 arrival["exposure_id"], result["duration_seconds"],
                 ", ".join(o["suffix"] for o in outputs), latency,
                 "; pointing PLANNED: provisional quick-look" if message["pointing_provisional"]
                 else "", extra=ctx)

    async def _publish_skipped(self, arrival, name, wid, reason: str, ctx) -> None:
        message = contract.build(
            "product", contract.event_id("product", wid, "skipped"),
            **self._event_fields(arrival, name, wid), outcome="skipped", reason=reason,
            outputs=[], jwst_version=jwst_version(), crds_context=self.crds_context,
            duration_seconds=None)
        await anyio.to_thread.run_sync(
            lambda: self.store.write_record(name.program, name.observation,
                                            name=arrival["exposure_id"], stage=STAGE,
                                            record={"work_id": wid, "event": message.body}))
        await self.bus.publish("products", name.program, message)
        self._count("skipped")
        log.info("%s: no science data (%s): skipped product event", arrival["exposure_id"],
                 reason, extra=ctx)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
