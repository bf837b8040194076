"""Detector1 for every arrival: raw -> rate/rateints products and a product event."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
from aiokafka.structs import ConsumerRecord

from calstream.steps.fitsfile import file_digest
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.topics import contract

from .config import Config
from .stage import StageRunner, WorkItem

log = logging.getLogger("calstream.detector1")

STAGE = "detector1"
PIPELINE = "calwebb_detector1"
TASK = "calstream.steps.detector1:run_detector1"


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
            arrived_at=arrival["detected_at"], key=key, record=record)

    def _check_input(self, arrival: contract.Message) -> str | None:
        try:
            name = parse_exposure_name(arrival["exposure_id"])
            file_name = parse_exposure_name(Path(arrival["path"]).name)
        except BadName as exc:
            return str(exc)
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
