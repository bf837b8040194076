"""One path for every stage's records: decode, admit, then run or dead-letter.

The rules are the deciders' (deciders/admission.py); this doer gathers the
facts they need (paths resolved, files found, digests read, the namespace of
each input), and acts on the verdict: a dead letter, a stale record dropped,
or a work item (deciders/work_items.py) for the runner.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio

from calstream.daemon.deciders import admission
from calstream.daemon.deciders.admission import ExposureFacts, FileFacts, Roots, Verdict
from calstream.daemon.deciders.level3_members import member_paths, members_problem
from calstream.daemon.deciders.order_header import (
    carried_header,
    header_copy_problem,
    science_member,
)
from calstream.daemon.deciders.order_parameters import differing_steps, run_steps
from calstream.daemon.deciders.pointing_gate import exposure_of_input, planned_inputs_problem
from calstream.daemon.deciders.stage2_members import companions_problem
from calstream.daemon.deciders.stage2_members import header_paths as companion_header_paths
from calstream.daemon.deciders.store_move import (
    moved_copy_problem,
    moved_inputs,
    rerooted_order,
    rerooter,
)
from calstream.daemon.deciders.work_items import (
    WorkItem,
    detector1_item,
    detector1_steps,
    pipeline_of,
    work_order_item,
)
from calstream.daemon.doers.digest_memo import (
    digest_of,
    exposure_header_of,
    exposure_of,
    pointing_of,
    signature_of,
)
from calstream.daemon.doers.kafka import Record
from calstream.daemon.doers.namespace_context import ContextRecordUnwritten, namespace_problem
from calstream.daemon.doers.product_store import OutsideRoot
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.operations.config import Config
from calstream.daemon.stages import Stage
from calstream.steps.crds_env import unavailable_context
from calstream.steps.exposure import BadExposure
from calstream.steps.failures import error_text
from calstream.topics import contract
from calstream.topics.dead_letters import order_identity

log = logging.getLogger("calstream.admission")


def _facts(path_text: str) -> FileFacts:
    path = Path(path_text)
    problem = admission.path_text_problem(path_text)
    if problem:
        return FileFacts(path, path, False, problem)
    try:
        resolved = path.resolve()
        return FileFacts(path, resolved, resolved.is_file())
    except RuntimeError:  # resolve()'s way of saying ELOOP
        problem = "its symbolic links loop"
    except OSError as exc:  # whatever else the file system refuses to look up
        problem = f"it cannot be looked up: {exc.strerror or exc}"
    return FileFacts(path, path, False, f"path {admission.shown_path(path_text)}: {problem}")


def _exposure(path_text: str) -> ExposureFacts:
    """The file's own header, read the way the watcher read it."""
    path = Path(path_text)
    try:
        return ExposureFacts(exposure_of(path).header, path.stat().st_size)
    except (BadExposure, OSError) as exc:
        return ExposureFacts({}, -1, str(exc))


def _context_problem(message: contract.Message, context: str | None) -> Verdict | None:
    """A replay's CRDS context that this daemon's cache lacks for good (a
    server-less crds), which no retry fixes: refused before any run. (It was
    taken for CRDS being down: parked, tried every half minute, forever.)
    ``context`` has passed the admission's name checks."""
    missing = unavailable_context(context) if context is not None else None
    if missing is None:
        return None
    return admission.bad_input(f"{missing}; redrive it once the cache has it",
                               exposure_id=message.get("exposure_id"))


def _roots(roots: list[Path]) -> Roots:
    return Roots(list(roots), [r.resolve() for r in roots])


class RecordAdmitter:
    """Handles one stage's records (the consumer's handler)."""

    def __init__(self, cfg: Config, runner: WorkItemRunner, stage: Stage):
        self.cfg = cfg
        self.runner = runner
        self.stage = stage
        self.publisher = runner.publisher
        self.reroot = rerooter(map(str, cfg.products_moved_from), str(cfg.products))

    def _count(self, message: contract.Message | None, outcome: str) -> None:
        self.runner.metrics.stage_runs.labels(
            stage=self.stage.name, pipeline=pipeline_of(self.stage.name, message),
            outcome=outcome).inc()

    async def handle(self, record: Record) -> None:
        key = record.key.decode("utf-8", "replace") if record.key else ""
        for name, value in record.headers or ():
            if name == "calstream-redrive":  # `calstream deadletters redrive`: who and why
                # A header is anyone's, one line each: flood-controlled as a
                # per-record line (the topic keeps every one).
                log.info("%s: redriven dead letter: %s", key, value.decode("utf-8", "replace"),
                         extra={"stage": self.stage.name, "fault": "data"})
        await self.publisher.keep_redrives(record)  # before its run: a broker may go meanwhile
        try:
            message = contract.decode(record.value, expected=self.stage.message)
        except contract.InvalidMessage as exc:
            await self.publisher.dead_letter(category="invalid_message", reason=str(exc),
                                             stage=self.stage.name, key=key, record=record)
            self._count(None, "failed")
            return
        from_replay = record.topic.endswith(self.stage.replay_topic)
        try:
            verdict, message = await anyio.to_thread.run_sync(self._judge, message, from_replay)
            item = self.work_item(message, key, record) if verdict.action == "run" else None
            if item is not None:
                # Every path the run will write, checked before it starts.
                self.runner.store.for_namespace(item.namespace).log_path(
                    item.program, item.observation, item.name, item.stage, item.version)
        except OutsideRoot as exc:  # its names, or a link in the store, lead out of it
            verdict, item = admission.bad_input(f"cannot write its products: {exc}"), None
        except ContextRecordUnwritten:
            raise  # the store's fault: the consumer keeps the record, parked, and tries again
        except Exception as exc:  # noqa: BLE001 - one record must never stop its partition
            # Judging reads only this record's own files: whatever goes wrong
            # here is this record's fault, and retrying it would block every
            # record behind it. Publishing and running stay outside this.
            log.exception("%s: cannot admit this record", key,  # a data fault: flood-controlled
                          extra={"stage": self.stage.name, "fault": "data"})
            verdict, item = admission.bad_input(
                f"cannot admit this record: {error_text(exc)}"), None
        if verdict.action == "dead_letter":
            # An order's identity beside its original, which the letter's
            # budget may cut (topics/dead_letters.order_identity).
            order = {"order": order_identity(message.body)} \
                if self.stage.message == "work_order" else {}
            await self.publisher.dead_letter(category=verdict.category, reason=verdict.reason,
                                             stage=self.stage.name, key=key, record=record,
                                             **order, **verdict.fields)
            self._count(message, "failed")
        elif verdict.action == "stale":
            name = message.get("exposure_id") if self.stage.message == "arrival" \
                else message["product_name"]
            log.info("%s: %s", name, verdict.reason,  # one per record of a replayed stream
                     extra={"exposure_id": name, "stage": self.stage.name, "fault": "data"})
            self._count(message, "stale")
        else:
            await self.runner.run(item)

    def _judge(self, message: contract.Message,
               from_replay: bool) -> tuple[Verdict, contract.Message]:
        """The admission verdict, and the message to run: an arrival carries
        the file's own header from here on (in a thread: it reads files). A
        replayed item to run must be of its namespace's one CRDS context,
        which the first one fixes (deciders/replay_namespace.py)."""
        verdict, message = self._verdict(message, from_replay)
        replay = message.get("replay")
        if verdict.action != "run" or not replay:
            return verdict, message
        asked = message.get("crds_context") or replay.get("crds_context") \
            or self.runner.crds_context  # what the run takes (WorkItemRunner.context)
        problem = namespace_problem(self.runner.store, replay["namespace"], asked, replay)
        if problem:
            return admission.bad_input(problem, exposure_id=message.get("exposure_id")), message
        return verdict, message

    def _verdict(self, message: contract.Message,
                 from_replay: bool) -> tuple[Verdict, contract.Message]:
        if self.stage.message == "arrival":
            problem = admission.arrival_problem(message, _facts(message["path"]),
                                                _roots(self.cfg.allowed_roots))
            if problem:
                return problem, message
            exposure = _exposure(message["path"])
            digest = None
            if exposure.problem is None:
                # Its bytes first: a file replaced since (a corrected
                # redelivery, with an arrival of its own) makes this one
                # stale, whatever its header says now; it was refused as a
                # forged header copy. Bytes that are the arrival's and a copy
                # that is not their header's: forged. (The watcher of this
                # daemon has usually just hashed it: digest_memo.py.)
                digest = digest_of(Path(message["path"]))
                if digest != message["digest"]:
                    return admission.arrival_staleness(message, digest), message
            problem = admission.arrival_claims_problem(message, exposure, from_replay)
            if problem:
                return problem, message
            message = contract.Message(message.type, {**message.body, "header": exposure.header})
            problem = _context_problem(message, (message.get("replay") or {}).get("crds_context"))
            if problem:
                return problem, message
            return admission.arrival_staleness(message, digest), message
        moved: dict[str, str] = {}
        if self.reroot is not None:  # the store moved: the order's paths read under its root
            body = rerooted_order(message.body, self.reroot)
            moved, message = moved_inputs(message.body, body), contract.Message(message.type, body)
        inputs = message.get("inputs", [])
        facts = [_facts(i["path"]) for i in inputs]
        problem = admission.work_order_problem(
            message, self.stage.name,
            [None if f.problem else self.runner.store.namespace_of(f.resolved) for f in facts],
            facts, _roots([self.cfg.products]), from_replay)
        if problem:
            return problem, message
        # The files' own headers, not the planner's reading of an event, say
        # whether an input's pointing is still provisional (pointing_gate.py).
        problem = planned_inputs_problem(message.body, {
            i["path"]: pointing_of(i["path"]) for i in inputs
            if exposure_of_input(i["path"]) is not None})
        if problem:
            return problem, message
        if self.stage.name == "stage2":
            # Its exposure's header, as the product event will carry it: the
            # science file's own, not the order's copy (order_header.py).
            science = science_member(message.body)  # one, admission checked
            own = exposure_header_of(science) if science else None
            problem = header_copy_problem(message.body, own)
            if problem:
                return problem, message
            # Its other members by their own headers too: of the order's
            # program, as every companion the planner gives (stage2_members.py).
            problem = companions_problem(message.body, own, {
                p: exposure_header_of(p) for p in companion_header_paths(message.body)})
            if problem:
                return problem, message
            if own is not None:
                message = contract.Message(message.type, {**message.body,
                                                          "header": carried_header(message.body, own)})
        elif self.stage.name == "stage3":
            # Its members' own headers say which candidate they make, not the
            # events the planner read (level3_members.py); headers only, memoised.
            problem = members_problem(message.body, {
                p: exposure_header_of(p) for p in member_paths(message.body)})
            if problem:
                return problem, message
        problem = _context_problem(message, message.get("crds_context") or (
            message.get("replay") or {}).get("crds_context"))
        if problem:
            return problem, message
        digests = [digest_of(Path(i["path"])) for i in inputs]
        if moved and (problem := moved_copy_problem(inputs, digests, moved)):
            return admission.bad_input(problem), message
        return admission.work_order_staleness(message, digests), message

    def work_item(self, message: contract.Message, key: str, record: Record) -> WorkItem:
        if self.stage.message == "arrival":
            configured = self.cfg.step_parameters()
            return detector1_item(message, task=self.stage.task,
                                  steps=detector1_steps(configured, message),
                                  key=key, record=record, pipelines=self.stage.pipelines,
                                  other_steps=lambda p: detector1_steps(configured, message, p),
                                  # what _judge just read the digest under: no second read
                                  input_signature=signature_of(Path(message["path"]),
                                                               message["digest"]))
        steps = run_steps(self.cfg.step_parameters(), message)
        differing = differing_steps((message.get("parameters") or {}).get("steps"), steps)
        if differing:
            shown = ", ".join(differing[:10]) + (f" and {len(differing) - 10} more"
                                                 if len(differing) > 10 else "")
            log.warning("%s: the work order asks for other step parameters than this daemon's "
                        "configuration gives it (%s): running it with the configured ones",
                        message["product_name"], shown[:600],
                        extra={"stage": self.stage.name,
                               "exposure_id": message.get("exposure_id") or key})
        return work_order_item(message, stage=self.stage.name, task=self.stage.task, key=key,
                               record=record, steps=steps, signatures={
                                   i["path"]: signature_of(Path(i["path"]), i["digest"])
                                   for i in message.get("inputs", [])})
