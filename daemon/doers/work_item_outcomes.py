"""A run's outcome made known: its product event, its skipped event or its dead letter.

Kept apart from ``work_item_runner`` (the idempotency check, the attempts
with their retries and parking): this is what follows the last attempt.
A success's outputs are described, moved into the product store with their
record (the commit marker) in one trip off the event loop, announced and
their previews drawn; a skipped or failed run's record is written, parked
while the store refuses it, so its event or dead letter is sent once.
``RunOutcomes`` is a mixin of ``WorkItemRunner``, whose configuration,
store, publisher and metrics it uses.
"""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path
from typing import Any

import anyio

import calstream
from calstream.daemon.deciders.run_results import BadResult, output_problem, result_problem
from calstream.daemon.deciders.work_items import WorkItem
from calstream.daemon.doers.digest_memo import remember_written
from calstream.daemon.doers.parking import Parking, in_thread, until_done
from calstream.daemon.doers.preview_runner import planned_previews
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.stages import arrival_product_stages
from calstream.steps.fitsfile import file_digest
from calstream.steps.provenance import jwst_version
from calstream.topics import contract

log = logging.getLogger("calstream.stage")


class RunOutcomes:
    async def _dead_letter(self, item: WorkItem, step, detail: str, outcome, attempts: int,
                           run_log: Path) -> None:
        error_type = outcome.failure.error_type if outcome and outcome.failure else "WorkerLost"
        await self.publisher.dead_letter(
            category=step.category, reason=f"{item.pipeline} failed: {detail}", stage=item.stage,
            key=item.key or item.name, attempts=attempts, record=item.record,
            exposure_id=item.event_fields.get("exposure_id"),
            path=item.inputs[0]["path"] if item.inputs else None,
            digest=item.inputs[0]["digest"] if item.inputs else None,
            log_path=str(run_log), error_type=error_type,
            **({"order": item.order} if item.order else {}))
        self.count(item, "failed")
        if item.stage in arrival_product_stages() and item.inputs:
            await self._write_parked(item, "its failure record", lambda: self.store.for_namespace(
                item.namespace).record_failure(item.program, item.observation, name=item.name,
                                               stage=item.stage, digest=item.inputs[0]["digest"],
                                               reason=detail))

    async def _write_parked(self, item: WorkItem, what: str, write) -> None:
        """A record written after the run's outcome is out: a store that refuses
        it (full, read-only) parks the item here. Raised, the handler would run
        the item again and send its dead letter or event once more each time."""
        await until_done(in_thread(write), Parking(
            self.cfg, self.metrics, stage=item.stage, what=f"{item.name}: {what}",
            log_context=item.log_context, root=self.store.top))  # as the runner's park

    def _fields(self, item: WorkItem, wid: str, run_log: Path) -> dict[str, Any]:
        fields = dict(
            work_id=wid, stage=item.stage, pipeline=item.pipeline, program=item.program,
            observation=item.observation, product_name=item.name, inputs=item.inputs,
            calstream_version=calstream.__version__, arrived_at=item.arrived_at,
            namespace=item.namespace, replay=item.replay, version=item.version,
            supersedes=self._supersedes(item), log_path=str(run_log),
            pointing_quality="UNKNOWN", pointing_provisional=False,
            # The step parameters calstream asked for (contract 1.3): the CRDS
            # parameter files, named by crds_context, decide everything else.
            parameters={"steps": item.task_kwargs.get("steps") or {}},
        )
        fields.update(item.event_fields)
        return fields

    def _supersedes(self, item: WorkItem) -> str | None:
        """The product event of the newest earlier version still in the item's namespace."""
        store = self.store.for_namespace(item.namespace)
        for version in store.earlier_versions(item.program, item.observation, item.version):
            done = store.lookup(item.program, item.observation, name=item.name,
                                stage=item.stage, version=version, verify=False)
            if done is not None:
                return done.event["event_id"]
        return None

    async def _publish(self, item: WorkItem, wid: str, scratch: Path, result: dict,
                       run_log: Path, store: ProductStore) -> None:
        if problem := result_problem(result):  # before anything of it is read
            raise BadResult(problem)
        final_dir = store.directory(item.program, item.observation, item.version)
        context = self.context(item)

        # Digests and sizes come from the worker, which also synced the files
        # (output_sealing.py); a task run another way is described here.
        sealed = result.get("sealed")

        def describe_outputs() -> list[dict[str, Any]]:
            files = []
            for produced in sorted(Path(p) for p in result["outputs"]):
                digest, size = (sealed or {}).get(str(produced)) or (
                    file_digest(produced), produced.stat().st_size)
                files.append({"path": str(final_dir / produced.name), "digest": digest,
                              "size": size, "suffix": produced.stem.rsplit("_", 1)[-1]})
            return files

        def commit() -> tuple[contract.Message, list[str]]:
            # One trip off the event loop: the digests, the message and its
            # schema check, the renames and the record (the fixed cost per
            # exposure is made of such trips; issue 15).
            _check_places(result["outputs"], scratch)
            outputs = describe_outputs()
            # Listed now, made after the event (optional outputs: may never appear).
            previews = [p for p in planned_previews([o["path"] for o in outputs])
                        if store.holds(Path(p["path"]))]
            fields = self._fields(item, wid, run_log)
            if result.get("steps") is not None:  # as passed, jwst 3.0 workarounds included
                fields["parameters"] = {"steps": result["steps"]}
            # The files' digests are part of its identity: the same work run
            # again (its files damaged or removed since) makes other bytes
            # (jwst writes dates into them), which under the first event's id
            # subscribers and the planner's intake refused as a forgery.
            message = contract.build(
                "product", contract.event_id("product", wid, "success",
                                             [o["digest"] for o in outputs]),
                **fields, outcome="success", reason=None, outputs=outputs,
                jwst_version=result["jwst_version"],
                crds_context=result["crds_context"] or context,
                duration_seconds=result["duration_seconds"],
                **({"previews": previews} if previews else {}))
            # Sendable, before anything is committed: an event over what every
            # reader takes, committed, was re-emitted and refused for ever.
            contract.within_limit(message)
            with self.previews.kept(message.event_id, outputs, item.log_context, bool(previews)):
                store.publish(scratch, item.program, item.observation, name=item.name,
                              stage=item.stage, version=item.version, synced=sealed is not None,
                              record={"work_id": wid, "event": message.body})
            for out in outputs:  # the next stage's admission checks these digests
                remember_written(Path(out["path"]), out["digest"])
            return message, previews

        if result["crds_context"] and result["crds_context"] != context:
            log.warning("%s: pipeline used CRDS context %s, expected %s", item.name,
                        result["crds_context"], context, extra=item.log_context)
        message, previews = await anyio.to_thread.run_sync(commit)
        outputs = message["outputs"]
        self.metrics.stage_duration.labels(stage=item.stage, pipeline=item.pipeline).observe(
            result["duration_seconds"])
        # The record (the commit marker) is down: announce at once.
        refused = False
        try:
            await self.publisher.publish("products", item.program, message)
        except contract.InvalidMessage:
            # Refused for what it is (RecordRefused): the item is dead-lettered
            # and counted "failed" there, its one outcome; before session 45 it
            # was counted "success" too.
            refused = True
            raise
        finally:
            # Any other end counts the run that succeeded with its commit
            # marker, not only an acknowledgement: a run whose event a broker
            # outage delays would only ever be counted as the "duplicate"
            # that re-emits it.
            if not refused:
                self.count(item, "success")
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
        if self.background is not None:
            self.background.start_soon(self.previews.draw, message.event_id, previews,
                                       item.log_context)
        else:  # drawn now, ungated: this item is in the gate's count until it returns
            await self.previews.draw(message.event_id, previews, item.log_context, gated=False)

    async def _publish_skipped(self, item: WorkItem, wid: str, reason: str,
                               run_log: Path, store: ProductStore) -> None:
        message = contract.build(
            "product", contract.event_id("product", wid, "skipped"),
            **self._fields(item, wid, run_log), outcome="skipped", reason=reason, outputs=[],
            jwst_version=jwst_version(), crds_context=self.context(item), duration_seconds=None)
        await self._write_parked(item, "its skipped record", lambda: store.write_record(
            item.program, item.observation, name=item.name, stage=item.stage,
            version=item.version, record={"work_id": wid, "event": message.body}))
        await self.publisher.publish("products", item.program, message)
        self.count(item, "skipped")
        log.info("%s: no science data (%s): skipped product event", item.name, reason,
                 extra=item.log_context)


def _check_places(outputs: list[str], scratch: Path) -> None:
    """Raise BadResult unless every output is a regular file of ``scratch``,
    all that the store moves in: a link there would be moved into the store
    and announced with the digest of whatever it points to."""
    inside = scratch.resolve()
    for listed in outputs:
        path = Path(listed)
        if problem := output_problem(path.parent.resolve() / path.name, inside):
            raise BadResult(problem)
        try:
            regular = stat.S_ISREG(path.lstat().st_mode)
        except FileNotFoundError:
            # Removed since the run (its scratch directory with it), or never
            # written: run again, a bounded number of times.
            raise BadResult(f"its output {path} is gone", "transient") from None
        if not regular:
            raise BadResult(f"its output {path} is not a regular file")
