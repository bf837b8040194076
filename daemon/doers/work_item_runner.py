"""Running one work item, the same way for every stage.

The admission rules (deciders/admission.py, deciders/work_items.py) decide
*what* to run and with which inputs; this module does the rest, identically
for every stage: the idempotency check against the product store, the
warm-worker run with retries of transient failures (deciders/retry_policy.py),
parking on infrastructure faults (a full store, CRDS: retried until they clear,
never dead-lettered), the atomic publication of the outputs, and the product
event or dead letter.
"""

from __future__ import annotations

import logging
import random
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.deciders.core_sharing import cores_for_run
from calstream.daemon.deciders.provenance_records import done_problem
from calstream.daemon.deciders.retry_policy import (
    AttemptCount,
    Backoff,
    NextStep,
    after_run,
    split_kind,
)
from calstream.daemon.deciders.run_results import BadResult
from calstream.daemon.deciders.work_items import DETECTOR1_PIPELINE, WorkItem
from calstream.daemon.doers import consumer_slots
from calstream.daemon.doers.kafka import Publisher
from calstream.daemon.doers.park_gates import ParkedItem, ParkGates
from calstream.daemon.doers.pending_previews import PendingPreviews
from calstream.daemon.doers.preview_runner import Previews
from calstream.daemon.doers.product_store import Done, ProductStore
from calstream.daemon.doers.work_claims import WorkClaims
from calstream.daemon.doers.work_item_outcomes import RunOutcomes
from calstream.daemon.doers.work_item_runs import CutShortRuns, solitude
from calstream.daemon.doers.worker_pool import ServerLost, WorkerLost, WorkerPool
from calstream.daemon.operations import logs
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics
from calstream.steps.failures import (
    INFRASTRUCTURE,
    STORE_CAUSES,
    error_text,
    infrastructure_cause,
    with_place,
)
from calstream.steps.provenance import work_id
from calstream.steps.reference_integrity import any_changed
from calstream.topics import contract

log = logging.getLogger("calstream.stage")


@dataclass
class WorkItemRunner(RunOutcomes):
    cfg: Config
    publisher: Publisher
    store: ProductStore
    pool: WorkerPool
    metrics: Metrics
    crds_context: str  # the daemon's; a replayed item may carry its own
    # Where previews are drawn once a product is out (the stage's task group):
    # the record is finished then, so previews never hold its partition or
    # its commit. None (tests): drawn before run() returns.
    background: Any = None
    # Runs going on, by (work id, version): the same work handed over again
    # while it runs (a record refetched after a rebalance, a file re-announced
    # after a broker restart) waits for that run and is then found done.
    running: dict[tuple[str, Any], anyio.Event] = field(default_factory=dict)
    # Items parked on one fault take turns at trying again (doers/park_gates.py).
    gates: ParkGates = field(default_factory=ParkGates)
    # Runs of other daemons sharing the store (doers/work_claims.py).
    claims: WorkClaims = field(init=False)
    # Previews: held back while this runner's calibrations are in flight in
    # its pool (.gate), kept pending in the store until drawn.
    previews: Previews = field(init=False)

    def __post_init__(self) -> None:
        self.claims = WorkClaims(self.store.top, heartbeat_seconds=self.cfg.claim_heartbeat_seconds,
                                 stale_seconds=self.cfg.claim_stale_seconds, metrics=self.metrics)
        self.previews = Previews(self.pool, PendingPreviews(self.store, self.pool.stage, self.claims),
                                 self.metrics, max_wait=self.cfg.preview_max_wait,
                                 heartbeat_seconds=self.cfg.claim_heartbeat_seconds)

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
        key = (self.work_id(item), item.version)
        item.work_id = key[0]
        while (other := self.running.get(key)) is not None:
            log.info("%s: %s already running (work %s); waiting for that run", item.name,
                     item.pipeline, key[0][:12], extra=item.log_context)
            await other.wait()
        mine = self.running[key] = anyio.Event()
        try:
            # In the preview gate's count from here to its product event, also
            # between a run's end and its commit (bench/README.md, session 19).
            with self.previews.gate.calibrating():
                async with self.claims.held(key[0], item.version, stage=item.stage,
                                            name=item.name, log_context=item.log_context):
                    await self._run_once(item)
        finally:
            del self.running[key]
            mine.set()

    async def _run_once(self, item: WorkItem) -> None:
        wid = self.work_id(item)
        store = self.store.for_namespace(item.namespace)
        runs = CutShortRuns(self.claims, wid, item.version)

        def look() -> Done | None:  # one trip off the loop (issue 15)
            done = self._done(item, wid, store)
            runs.read()
            if runs.suspect and done is not None:
                runs.forget()  # a mark its daemon's end left after the commit
            return done
        done = await anyio.to_thread.run_sync(look)
        if done is not None:
            await self._re_emit(item, wid, done)
            return
        await self._attempts(item, wid, store, runs)

    @staticmethod
    def _done(item: WorkItem, wid: str, store: ProductStore) -> Done | None:
        done = store.lookup(item.program, item.observation, name=item.name, stage=item.stage,
                            work_id=wid, version=item.version)
        problem = done and done_problem(done.published_event, work_id=wid, name=item.name,
                                        stage=item.stage)
        if problem:
            log.warning("%s: its provenance record cannot stand for this work (%s): "
                        "running it again", item.name, problem, extra=item.log_context)
            return None
        return done

    async def _re_emit(self, item: WorkItem, wid: str, done: Done) -> None:
        """Already done: re-emit the same event (same event_id, same content:
        as published, whatever root the store has now) so a subscriber that
        missed it gets it and one that did not drops it."""
        event = contract.Message("product", {**done.published_event,
                                             "emitted_at": contract.utc_now()})
        try:
            await self.publisher.publish("products", item.program, event)
        except contract.InvalidMessage as exc:
            # The broker refuses the event for what it is (RecordRefused: the
            # products topic's max.message.bytes below it, a policy): the same
            # at every try. Raised, the handler retried the record for ever,
            # parked "unknown". A dead letter with the reason; its redrive
            # re-emits the event once the topic takes it.
            await self.publisher.dead_letter(
                category="permanent_failure", stage=item.stage, key=item.key or item.name,
                reason=f"{item.pipeline} done, but its product event cannot be sent: {exc}",
                record=item.record, exposure_id=item.event_fields.get("exposure_id"),
                **({"order": item.order} if item.order else {}))
            self.count(item, "failed")
            return
        self.count(item, "duplicate")
        log.info("%s: %s already done (work %s); product event re-emitted", item.name,
                 item.pipeline, wid[:12], extra=item.log_context)

    async def _attempts(self, item: WorkItem, wid: str, store: ProductStore,
                        runs: CutShortRuns) -> None:
        run_log = store.log_path(item.program, item.observation, item.name, item.stage,
                                 item.version)
        cut_short = runs.cut_short
        # Runs cut short with an earlier daemon (work_item_runs.py): lost workers.
        attempts = AttemptCount(made=cut_short, counted=cut_short)
        if cut_short:
            step = self._next("transient", AttemptCount(counted=cut_short - 1), item)
            detail = (f"its last {cut_short} run(s) were cut short with the daemon (killed "
                      "during each: the kernel's OOM killer, kill -9, a lost machine)")
            log.warning("%s: %s; %s", item.name, detail, "not run again" if step.action ==
                        "dead_letter" else "run again, as a lost worker's retry",
                        extra=item.log_context)
            if step.action == "dead_letter":
                await self._dead_letter(item, step, detail, None, cut_short, run_log)
                await anyio.to_thread.run_sync(runs.forget)
                return
        elif runs.suspect:
            log.warning("%s: its last run was cut short with the daemon, beside other runs: "
                        "not counted against it; run alone (this daemon's other runs wait "
                        "for it), as only a run cut short alone is counted", item.name,
                        extra=item.log_context)
        parked = ParkedItem(self.gates, self.metrics, item, self.cfg.park_recheck_seconds,
                            self.previews.gate)
        try:
            while True:
                step, kind, detail, outcome = await self._attempt(
                    item, wid, store, run_log, attempts, runs, parked=parked.parked is not None)
                attempts.ended(kind)
                parked.tried(step.action)
                if step.action == "park":  # tried again once the files it lies in change
                    files = outcome.failure.waits_on if outcome and outcome.failure else {}
                    # Labelled with the store's own root, not a namespace's
                    # tree: a replayed record names its namespace, and each
                    # name was a series of its own (the line names the tree).
                    await parked.park(step.cause, step.delay, detail,
                                      partial(any_changed, files) if files else None,
                                      root=str(store.top))
                    continue
                if step.action == "retry":
                    self.metrics.retries.labels(stage=item.stage, pipeline=item.pipeline).inc()
                    log.warning("%s: %s failure (%s); retry %d/%d in %.1fs", item.name,
                                kind, detail, attempts.of(kind), self.cfg.max_attempts, step.delay,
                                extra=item.log_context)
                    await anyio.sleep(step.delay)
                    continue
                parked.end(step.action)
                if step.action == "dead_letter":
                    await self._dead_letter(item, step, detail, outcome, attempts.made,
                                            run_log)
                return
        finally:
            parked.end(None)

    async def _attempt(self, item: WorkItem, wid: str, store: ProductStore, run_log: Path,
                       attempts: AttemptCount, runs: CutShortRuns | None = None,
                       parked: bool = False):
        """One run, and what comes next: (step, kind, detail, outcome); ``attempts``:
        those made before it. Its record's stall clock starts again when a
        worker is its (consumer_slots.run_begins), unless the item has parked:
        one that keeps its consumer's place while parked is judged stalled
        after stall_seconds, its probes' runs notwithstanding. ``runs``
        marks the run's start in a worker until its end (work_item_runs.py)."""
        outcome = None
        # Where its writes go: named in a disk fault's line when the error names no path.
        place = store.directory(item.program, item.observation, item.version)
        log.info("%s: %s starting (attempt %d)", item.name, item.pipeline, attempts.made + 1,
                 extra=item.log_context)
        try:
            scratch = await anyio.to_thread.run_sync(
                store.scratch, item.program, item.observation, wid, item.version)
        except OSError as exc:
            # The store itself refuses a directory (full, read-only): no run can work.
            kind = self._store_fault(exc)
            detail = with_place(error_text(exc), place)
            return self._next(kind, attempts, item), kind, detail, outcome
        # Done meanwhile (another member ran it after a rebalance while this
        # waited for a worker): checked again the moment a worker is ours.
        done: list[Done] = []

        def still_needed() -> bool:
            done.extend(filter(None, [self._done(item, wid, store)]))
            return not done

        # A suspect (work_item_runs.py) runs alone in this process's workers.
        alone = runs is not None and runs.suspect

        def started() -> None:
            if runs is not None:
                runs.began(alone)
            if not parked:
                consumer_slots.run_begins()

        try:
            async with solitude().run(alone=alone, metrics=self.metrics,
                                      stage=self.pool.stage, name=item.name):
                try:
                    outcome = await self.pool.run(
                        item.task, {**item.task_kwargs, "output_dir": str(scratch)},
                        timeout=self.cfg.task_timeout, log_path=str(run_log),
                        env={"CRDS_CONTEXT": self.context(item),
                             **logs.task_env(**item.log_context)},
                        priority=0 if item.priority == "live" else 1, still_needed=still_needed,
                        share_cores=self._core_sharing(item), started=started)
                finally:
                    if runs is not None and runs.marking:  # ended as this process sees it
                        with anyio.CancelScope(shield=True):
                            await anyio.to_thread.run_sync(runs.ended)
            if outcome is None:
                await anyio.to_thread.run_sync(shutil.rmtree, scratch, True)
                await self._re_emit(item, wid, done[0])
                return NextStep("done"), "duplicate", "", None
            failure = outcome.failure
            if outcome.cores > 1:
                log.info("%s: %s ran with maximum_cores=%d (no other item waited)", item.name,
                         item.pipeline, outcome.cores, extra=item.log_context)
            kind = failure.classification if failure else "success"
            # A full disk's error from the run names no path: where it wrote, then.
            detail = with_place(f"{failure.error_type}: {failure.message}",
                                place if split_kind(kind)[1] in STORE_CAUSES else None) \
                if failure else ""
        except ServerLost as exc:
            # Its worker died with the worker server (the OOM killer took the
            # server, a hung one was killed): nothing the run did; retried,
            # then parked, never dead-lettered for it.
            kind, detail = f"{INFRASTRUCTURE}:worker_server", str(exc)
        except WorkerLost as exc:
            kind, detail = "transient", str(exc)
        except BaseException:
            # Shutdown mid-run: leave no scratch behind (the record stays
            # uncommitted and is redone by whoever gets it next).
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, scratch, True)
            raise
        step = self._next(kind, attempts, item)
        if step.action == "publish":
            try:
                await self._publish(item, wid, scratch, outcome.value, run_log, store)
                return step, kind, detail, outcome
            except OSError as exc:
                # Moving outputs in or writing the record hit a full store: run again later.
                kind = self._store_fault(exc)
                detail = with_place(error_text(exc), place)
                step = self._next(kind, attempts, item)
            except contract.InvalidMessage as exc:
                # Its product event cannot be sent (over every reader's limit;
                # a value its schema refuses), found before the commit: the
                # same at every attempt, so a dead letter with the reason.
                kind, detail = "permanent", f"its product event cannot be sent: {exc}"
                step = self._next(kind, attempts, item)
            except BadResult as exc:
                # The task's answer is not a product's (deciders/run_results.py):
                # mostly the same at every attempt, so a dead letter with the reason.
                kind, detail = exc.kind, f"its result cannot be published: {exc}"
                step = self._next(kind, attempts, item)
        await anyio.to_thread.run_sync(shutil.rmtree, scratch, True)
        if step.action == "publish_skipped":
            await self._publish_skipped(item, wid, detail, run_log, store)
        return step, kind, detail, outcome

    def _core_sharing(self, item: WorkItem):
        """How the pool picks a detector1 run's cores (None: always one). Not
        part of the work id: the products are the same bytes either way."""
        if self.cfg.max_cores_per_exposure <= 1 or item.pipeline != DETECTOR1_PIPELINE:
            return None
        size = sum(int(i.get("size") or 0) for i in item.inputs)

        def share(free_cores: int, waiting: int) -> int:
            return cores_for_run(free_cores=free_cores, waiting=waiting,
                                 cap=self.cfg.max_cores_per_exposure, input_bytes=size,
                                 min_bytes=int(self.cfg.multicore_min_mb * 2**20))
        return share

    def _next(self, kind: str, attempts: AttemptCount, item: WorkItem):
        base, cause = split_kind(kind)
        alike = base == INFRASTRUCTURE and self.gates.has_parked((*item.fault_family, cause))
        return after_run(kind, attempts.of(kind), max_attempts=self.cfg.max_attempts,
                         backoff=Backoff(self.cfg.retry_backoff), parked_alike=alike,
                         park_recheck=self.cfg.park_recheck_seconds, jitter=random.random())

    @staticmethod
    def _store_fault(exc: OSError) -> str:
        """The kind of an OSError from the store: an infrastructure fault, or raised on
        (the handler's own backoff retries the record; deciders/retry_policy.py)."""
        cause = infrastructure_cause(exc)
        if cause is None:
            raise exc
        return f"{INFRASTRUCTURE}:{cause}"
