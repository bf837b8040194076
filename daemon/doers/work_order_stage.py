"""Stage 2 and stage 3: run the pipeline a planner's work order names, on its association."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
from aiokafka.structs import ConsumerRecord

from calstream.daemon.doers.detector1_stage import replay_problem, within_roots
from calstream.daemon.doers.product_store import BadNamespace, check_namespace
from calstream.daemon.doers.stage_runner import StageRunner, WorkItem
from calstream.daemon.operations.config import Config
from calstream.steps.fitsfile import file_digest
from calstream.topics import contract

log = logging.getLogger("calstream.workorders")

TASK = "calstream.steps.association_run:run_association"


class WorkOrderStage:
    def __init__(self, cfg: Config, runner: StageRunner, stage: str):
        self.cfg = cfg
        self.runner = runner
        self.stage = stage
        self.bus = runner.bus

    def _count(self, pipeline: str, outcome: str) -> None:
        self.runner.metrics.stage_runs.labels(stage=self.stage, pipeline=pipeline,
                                              outcome=outcome).inc()

    async def handle(self, record: ConsumerRecord) -> None:
        key = record.key.decode("utf-8", "replace") if record.key else ""
        try:
            order = contract.decode(record.value, expected="work_order")
        except contract.InvalidMessage as exc:
            await self.bus.dead_letter(category="invalid_message", reason=str(exc),
                                       stage=self.stage, key=key, record=record)
            self._count("unknown", "failed")
            return
        if order["stage"] != self.stage:
            await self.bus.dead_letter(
                category="invalid_message", record=record, stage=self.stage, key=key,
                reason=f"a {order['stage']} work order on the {self.stage} topic")
            self._count(order["pipeline"], "failed")
            return
        problem = self._check_namespace(order)
        if problem:
            await self.bus.dead_letter(category="bad_input", reason=problem, stage=self.stage,
                                       key=key, record=record,
                                       exposure_id=order.get("exposure_id"))
            self._count(order["pipeline"], "failed")
            return
        problem, stale = await anyio.to_thread.run_sync(self._check_inputs, order)
        if stale:
            # A member was recalibrated since the order was planned (e.g. a
            # corrected redelivery): the planner issues a new order for it.
            log.info("%s: %s", order["product_name"], stale,
                     extra={"exposure_id": order["product_name"], "stage": self.stage})
            self._count(order["pipeline"], "stale")
            return
        if problem:
            await self.bus.dead_letter(category="bad_input", reason=problem, stage=self.stage,
                                       key=key, record=record,
                                       exposure_id=order.get("exposure_id"))
            self._count(order["pipeline"], "failed")
            return
        await self.runner.run(self.work_item(order, key, record))

    def _check_namespace(self, order: contract.Message) -> str | None:
        """A namespace's products are made from live ones or its own, and
        never feed live ones: that is what keeps a reprocessing from touching
        the live products until it is promoted."""
        namespace = order.get("namespace") or "live"
        if order.get("replay"):
            problem = replay_problem(order["replay"])
            if problem:
                return problem
            if order["replay"]["namespace"] != namespace:
                return (f"work order for namespace {namespace!r} carries a replay into "
                        f"{order['replay']['namespace']!r}")
        elif namespace != "live":
            try:
                check_namespace(namespace)
            except BadNamespace as exc:
                return str(exc)
        for item in order.get("inputs", []):
            source = self.runner.store.namespace_of(Path(item["path"]))
            if source not in (None, "live", namespace):
                return (f"input {Path(item['path']).name} is from namespace {source!r}, "
                        f"but the order is for namespace {namespace!r}: a reprocessed "
                        "namespace never feeds another (or the live products)")
        return None

    def _check_inputs(self, order: contract.Message) -> tuple[str | None, str | None]:
        roots = [self.cfg.products]
        for item in order.get("inputs", []):
            path = Path(item["path"])
            if not path.is_absolute() or not within_roots(path, roots):
                return f"input {path} is outside the product store {self.cfg.products}", None
            if not path.is_file():
                return f"input {path} does not exist", None
            if file_digest(path) != item["digest"]:
                return None, f"input {path.name} changed since the work order was planned"
        return None, None

    def work_item(self, order: contract.Message, key: str, record: ConsumerRecord) -> WorkItem:
        asn = order["association"]
        members = sorted((m["exptype"], Path(m["expname"]).name)
                         for p in asn.get("products", []) for m in p.get("members", []))
        fields = {k: order[k] for k in ("exposure_id", "visit", "instrument", "exp_type",
                                        "header", "pointing_quality", "pointing_provisional",
                                        "releases", "degraded")
                  if order.get(k) is not None}
        parameters = order.get("parameters", {})
        fields["association"] = {"asn_id": asn.get("asn_id"), "asn_rule": asn.get("asn_rule"),
                                 "degraded_status": asn.get("degraded_status"),
                                 "members": [{"exptype": e, "expname": n} for e, n in members]}
        return WorkItem(
            stage=self.stage, pipeline=order["pipeline"], task=TASK,
            task_kwargs={"pipeline": order["pipeline"], "association": asn,
                         "asn_filename": order.get("association_path") or
                         f"{order['product_name']}_{self.stage}_asn.json",
                         "steps": parameters.get("steps", {}),
                         "corrections": parameters.get("pointing_corrections"),
                         "annotation": parameters.get("annotation")},
            program=order["program"], observation=order.get("observation") or "000",
            name=order["product_name"], inputs=order.get("inputs", []),
            parameters={**order.get("parameters", {}), "members": members},
            event_fields=fields, arrived_at=order.get("arrived_at"), key=key, record=record,
            crds_context=order.get("crds_context") or (order.get("replay") or {}).get("crds_context"),
            namespace=order.get("namespace") or "live",
            priority="replay" if order.get("priority") == "replay" or order.get("replay")
            else "live",
            replay=order.get("replay") or None,
            version=int(order.get("version") or 1))
