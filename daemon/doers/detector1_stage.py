"""Detector1 for every arrival: raw -> rate/rateints products and a product event."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
from aiokafka.structs import ConsumerRecord

from calstream.daemon.doers.product_store import BadNamespace, check_namespace
from calstream.daemon.doers.stage_runner import StageRunner, WorkItem
from calstream.daemon.operations.config import Config
from calstream.steps.fitsfile import file_digest
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.topics import contract

log = logging.getLogger("calstream.detector1")

STAGE = "detector1"
PIPELINE = "calwebb_detector1"
TASK = "calstream.steps.detector1:run_detector1"


def replay_problem(replay: dict) -> str | None:
    """What is wrong with a replay request carried by a message, or None."""
    namespace = replay.get("namespace")
    if not isinstance(namespace, str):
        return "replay request without a namespace"
    try:
        check_namespace(namespace, allow_live=False)
    except BadNamespace as exc:
        return f"replay request: {exc}"
    context = replay.get("crds_context")
    if context is not None and not (isinstance(context, str) and context.endswith(".pmap")):
        return f"replay request: CRDS context {context!r} is not a .pmap name"
    return None


def within_roots(path: Path, roots: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


class Detector1Stage:
    def __init__(self, cfg: Config, runner: StageRunner):
        self.cfg = cfg
        self.runner = runner
        self.bus = runner.bus

    def _count(self, outcome: str) -> None:
        self.runner.metrics.stage_runs.labels(stage=STAGE, pipeline=PIPELINE,
                                              outcome=outcome).inc()

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
        problem = self._check_input(arrival)
        if problem:
            await self.bus.dead_letter(category="bad_input", reason=problem, stage=STAGE, key=key,
                                       record=record, exposure_id=exposure_id,
                                       path=arrival["path"], digest=arrival["digest"])
            self._count("failed")
            return
        current = await anyio.to_thread.run_sync(file_digest, Path(arrival["path"]))
        if current != arrival["digest"]:
            # The inbox file was replaced (a corrected redelivery); the new
            # content has an arrival of its own, so this one is stale.
            log.info("%s: file changed since this arrival was announced; skipping stale arrival",
                     exposure_id, extra={"exposure_id": exposure_id, "stage": STAGE})
            self._count("stale")
            return
        await self.runner.run(self.work_item(arrival, key, record))

    def work_item(self, arrival: contract.Message, key: str, record: ConsumerRecord) -> WorkItem:
        name = parse_exposure_name(arrival["exposure_id"])
        header = arrival["header"]
        quality = str(header.get("ENGQLPTG", "UNKNOWN"))
        replay = arrival.get("replay") or None
        return WorkItem(
            stage=STAGE, pipeline=PIPELINE, task=TASK,
            task_kwargs={"input_path": arrival["path"], "steps": self.cfg.detector1_steps},
            program=name.program, observation=name.observation, name=arrival["exposure_id"],
            inputs=[{"path": arrival["path"], "digest": arrival["digest"],
                     "size": arrival["size"], "role": "uncal"}],
            parameters={"steps": self.cfg.detector1_steps},
            event_fields=dict(
                exposure_id=arrival["exposure_id"], visit=name.visit,
                instrument=header.get("INSTRUME"), exp_type=header.get("EXP_TYPE"),
                header=header, pointing_quality=quality,
                pointing_provisional=quality == "PLANNED"),
            arrived_at=arrival["detected_at"], key=key, record=record,
            crds_context=(replay or {}).get("crds_context"),
            namespace=(replay or {}).get("namespace") or "live",
            priority="replay" if replay or arrival.get("priority") == "replay" else "live",
            replay=replay)

    def _check_input(self, arrival: contract.Message) -> str | None:
        try:
            name = parse_exposure_name(arrival["exposure_id"])
            file_name = parse_exposure_name(Path(arrival["path"]).name)
        except BadName as exc:
            return str(exc)
        replay = arrival.get("replay")
        if replay:
            problem = replay_problem(replay)
            if problem:
                return problem
        path = Path(arrival["path"])
        if not path.is_absolute():
            return f"path {path} is not absolute"
        if not within_roots(path, self.cfg.allowed_roots):
            return (f"path {path} is outside the allowed roots "
                    f"({', '.join(str(r) for r in self.cfg.allowed_roots)})")
        if not path.resolve().is_file():
            return f"input file {path} does not exist (removed from the inbox?)"
        if file_name.exposure_id != name.exposure_id:
            return f"file name {path.name} does not match exposure id {name.exposure_id}"
        return None
