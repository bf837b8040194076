"""The calibration stages, declared once: what each reads, under which group,
what it runs, and with which settings.

Everything that wires a stage to the broker reads this table: the daemon
(roles.py) subscribes each stage's consumer group to its two topics, the
planner sends work orders to them, ``calstream status`` reports the groups'
lag and ``calstream replay`` republishes into the replay topics. Pure data:
importable from every room of the daemon.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stage:
    name: str  # the role, the group suffix and the product events' "stage"
    live_topic: str  # logical topic names (topics/catalog.py)
    replay_topic: str  # the same messages, read at low priority (live beats replay)
    message: str  # the message type both topics carry
    task: str  # "module:function" a warm worker runs for one item
    replay_from: str  # what `calstream replay --from` calls this stage's source
    # Config fields replaced for this stage's workers: {field: field to take it from}.
    settings: dict[str, str] = field(default_factory=dict)
    # Run once in each worker before its first task: warm_up imports
    # jwst's pipelines and freezes them out of GC scans, which helps every stage.
    initializer: str = "calstream.steps.worker_warmup:warm_up"
    # An arrival stage may run, per exposure, one of several pipelines (the
    # one routing picks): {pipeline alias: the product events' "stage"}.
    pipelines: dict[str, str] = field(default_factory=dict)
    # Items admitted ahead for each worker (worker_pool.py): none for runs of
    # hours, where it gains seconds and a queued item would look stalled.
    prefetch: int = 1
    # How long the broker may hold this stage's fetch when there is nothing to
    # read. tansu answers a held fetch only when the wait ends or at its next
    # look (~wait/2 late on average), yet each idle fetch costs it ~2 ms of CPU
    # (bench/README.md, session 16): 100 ms for the arrival hop, which is in
    # every exposure's fixed cost; Kafka's own 500 ms elsewhere, where a run
    # takes seconds to hours and ~60 ms more of a hop is nothing.
    fetch_wait_ms: int = 500

    def group(self, group_prefix: str) -> str:
        """The consumer group every daemon running this stage joins."""
        return f"{group_prefix}.{self.name}"


ASSOCIATION_TASK = "calstream.steps.association_run:run_association"

STAGES: tuple[Stage, ...] = (
    # jwst runs calwebb_dark on dark exposures and calwebb_guider on guide-star
    # data *instead of* detector1 (steps/routing.py level1_pipeline): the same
    # consumer, warm workers and product store run them, and their products
    # carry a stage of their own, which the planner does not take to stage 2.
    Stage("detector1", "raw", "replay", "arrival", "calstream.steps.detector1:run_detector1",
          replay_from="raw", fetch_wait_ms=100,
          pipelines={"calwebb_detector1": "detector1", "calwebb_dark": "dark",
                     "calwebb_guider": "guider"}),
    Stage("stage2", "work.stage2", "work.stage2.replay", "work_order", ASSOCIATION_TASK,
          replay_from="stage2"),
    # Longer, bigger runs combining many exposures: own pool size, recycling,
    # time-out and memory limit.
    Stage("stage3", "work.stage3", "work.stage3.replay", "work_order", ASSOCIATION_TASK,
          replay_from="stage3",
          settings={"workers": "stage3_workers",
                    "max_tasks_per_worker": "stage3_max_tasks_per_worker",
                    "task_timeout": "stage3_task_timeout",
                    "stall_seconds": "stage3_stall_seconds",
                    "worker_rss_limit_mb": "stage3_worker_rss_limit_mb",
                    "worker_run_memory_mb": "stage3_worker_run_memory_mb"},
          prefetch=0),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known: {sorted(BY_NAME)}") from None


def arrival_product_stages() -> tuple[str, ...]:
    """The product stages made straight from an arrival (an uncal file)."""
    return tuple(name for s in STAGES if s.message == "arrival"
                 for name in (s.pipelines.values() or (s.name,)))


def by_live_topic(logical: str) -> Stage | None:
    """The stage reading ``logical`` as its live topic, or None."""
    return next((s for s in STAGES if s.live_topic == logical), None)


def work_order_stages() -> list[Stage]:
    """The stages the planner sends work orders to."""
    return [s for s in STAGES if s.message == "work_order"]


def stage_config(st: Stage, cfg):
    """``cfg`` (a Config) with ``st``'s own settings in place of the shared ones."""
    if not st.settings:
        return cfg
    return dataclasses.replace(cfg, **{name: getattr(cfg, source)
                                       for name, source in st.settings.items()})


def daemon_workers(cfg) -> int:
    """The worker processes of every stage pool this daemon runs (its roles):
    they share its memory (steps/worker_memory.run_memory_bound_bytes)."""
    return sum(stage_config(st, cfg).workers for st in STAGES if st.name in cfg.roles)
