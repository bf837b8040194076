"""Configuration: defaults < TOML file < CALSTREAM_* environment < command-line flags.

Every value, whatever its source, goes through its setting's parser
(config_parsers, built from config_values); the source of each effective
value is kept in ``Config.sources`` for `calstream config show`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calstream.daemon.deciders import pool_warming as warming
from calstream.daemon.deciders.store_move import moved_roots_problem
from calstream.daemon.operations import config_values as values
from calstream.daemon.operations.config_parsers import PARSERS, ROLES
from calstream.daemon.operations.config_values import ConfigError, did_you_mean, host_port
from calstream.steps.regular_files import read_regular_text
from calstream.steps.step_parameters import StepParameters, merge_steps

__all__ = ["ROLES", "Config", "ConfigError", "KafkaSecurity", "host_port", "load"]

log = logging.getLogger("calstream.config")

# How far past its time-out a stage's stall limit lies when it is not set.
STALL_MARGIN = 900.0

# CALSTREAM_* variables that are not settings: the config file's path, the
# embedded broker's log and the workers' log level and format (operations/logs.py).
NOT_SETTINGS = ("CALSTREAM_CONFIG", "CALSTREAM_BROKER_LOG", "CALSTREAM_WORKER_LOG_LEVEL",
                "CALSTREAM_WORKER_JSON_LOGS", "CALSTREAM_TASK_LOG_CONTEXT",
                # The pid the worker server dies with (doers/worker_forkserver.py):
                # a process that started workers may start a daemon.
                "CALSTREAM_WORKER_SERVER_PARENT")


@dataclass
class KafkaSecurity:
    """Passed through to aiokafka; Apache Kafka deployments use TLS and SASL."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __repr__(self) -> str:  # the password never reaches a log line or a traceback
        shown = ", ".join(f"{f.name}={values.mask('security.' + f.name, getattr(self, f.name))!r}"
                          for f in dataclasses.fields(self))
        return f"KafkaSecurity({shown})"


@dataclass
class Config:
    work_dir: Path = Path("calstream-work")
    inbox: Path | None = None  # default: <work_dir>/inbox
    products: Path | None = None  # default: <work_dir>/products
    quarantine: Path | None = None  # default: <work_dir>/quarantine
    products_moved_from: list[Path] = field(default_factory=list)  # the store's earlier roots
    allowed_roots: list[Path] = field(default_factory=list)  # default: [inbox]
    kafka_bootstrap: str | None = None  # None: start the embedded broker
    broker_storage: str = "memory://tansu/"
    topic_prefix: str = "calstream."
    group_prefix: str = "calstream"
    roles: list[str] = field(default_factory=lambda: list(ROLES))
    workers: int = 2
    metrics_address: str = "127.0.0.1:9310"
    polling: bool = False
    poll_interval: float = 1.0
    settle_seconds: float = 0.25  # completeness is checked structurally; this only avoids mid-write reads
    incomplete_timeout: float = 300.0
    max_attempts: int = 3
    retry_backoff: float = 2.0
    # An item parked on an infrastructure fault (disk full, CRDS) is tried
    # again this often until the cause clears (deciders/retry_policy.py).
    park_recheck_seconds: float = 30.0
    # Parked items a stage's consumer lets go of its in-flight count, so that
    # others are fetched in their place (doers/consumer_slots.py); past this
    # many, a parked item keeps its place (their records stay in memory; 0: all keep it).
    max_parked_aside: int = 256
    task_timeout: float = 3600.0  # a run that takes longer is killed and retried
    # /readyz: an item in flight for this long (from its start). Past
    # task_timeout, with a margin: a run is legitimate until its time-out (a
    # spec2 of a NIRSpec IFU, a detector1 of a long time series take tens of
    # minutes), and at 900 s (before session 43) such a run paged
    # CalstreamConsumerStalled, critical. Stage 3's below follows the same rule.
    # Unset, each follows its time-out (``resolved``: STALL_MARGIN past it).
    stall_seconds: float = 3600.0 + STALL_MARGIN
    stage3_stall_seconds: float = 4 * 3600.0 + STALL_MARGIN  # stage 3's: its runs take hours
    heartbeat_seconds: float = 10.0  # /healthz: the event loop has not beaten for this long
    # A run's claim in the product store (doers/work_claims.py) is touched this
    # often; another daemon takes it over after this long without a touch.
    claim_heartbeat_seconds: float = 30.0
    claim_stale_seconds: float = 300.0
    broker_loss_seconds: float = 120.0  # /healthz fails after the broker is lost this long
    # A request to the broker unanswered this long (and a topic read with
    # neither a record nor its end) takes the broker for gone: a broker fault,
    # waited out and retried (each client's request_timeout_ms, doers/kafka/clients.py).
    broker_timeout_seconds: float = 30.0
    # False: the catalog's topics are an admin's to create (a site that denies
    # daemons Create); a daemon waits for missing ones and never asks.
    create_topics: bool = True
    max_tasks_per_worker: int = 200  # recycle workers to bound memory growth
    # A worker holding more than this resident and in use after a run is replaced (0: never).
    worker_rss_limit_mb: int = 3072
    # A run using more than this resident while it goes (its worker and the
    # worker's children) is ended at once and retried, then dead-lettered:
    # one runaway run must not take the container with it (0: never; None:
    # each worker's share of the container's memory, at least 4096:
    # steps/worker_memory.run_memory_bound_bytes).
    worker_run_memory_mb: int | None = None
    # A worker keeps the heap its runs freed for its next run (a full-frame
    # run otherwise spends a third of its time faulting fresh pages in:
    # steps/worker_memory.py) and gives it back after this long without work.
    worker_idle_return_seconds: float = 300.0  # at most a week
    # The worker server (every worker is a fork of it) is killed and started
    # again when it used no CPU this long while a worker's start waited for it
    # (doers/worker_server_watch.py). Its start imports jwst: progress, however slow.
    worker_server_hung_seconds: float = 60.0
    # A worker stopped mid-run (SIGSTOP, a frozen cgroup) this long, its run's
    # CPU time unchanged, is killed and its run retried (doers/worker_stopped.py;
    # 0: never, a stop then holds its run until task_timeout).
    worker_stopped_seconds: float = 60.0
    # jwst's maximum_cores for one detector1 run when nothing else waits for a
    # worker (deciders/core_sharing.py): at most this many cores, for inputs of
    # at least multicore_min_mb. 1: one core a run. Products are unchanged.
    max_cores_per_exposure: int = 1
    multicore_min_mb: float = 32.0
    # A preview waits until its pool has no calibration in flight, or this
    # long at most, so that a picture never takes a core from a product
    # (doers/preview_gate.py). 0: no wait (behind queued calibrations only).
    preview_max_wait: float = 300.0
    # Step parameters passed to the pipelines, as strun's --steps.<step>.<arg>
    # (steps/step_parameters.py): {pipeline: {step: {parameter: value}}}, and
    # the same per EXP_TYPE and per program. Unset: jwst's defaults and the
    # CRDS parameter reference files decide.
    steps: dict[str, Any] = field(default_factory=dict)
    steps_by_exp_type: dict[str, Any] = field(default_factory=dict)
    steps_by_program: dict[str, Any] = field(default_factory=dict)
    # Deprecated alias of [steps.calwebb_detector1] (which wins where both set a parameter).
    detector1_steps: dict[str, Any] = field(default_factory=dict)
    companion_wait: float = 3600.0  # a stage-2 companion that never comes stops blocking
    # Stage 3. A candidate a plan covers closes when its last member is
    # calibrated. Without a plan: `stage3_settle` after its visits are complete
    # by their headers (a later visit of the observation may still come, and
    # would supersede), else `stage3_quiet_period` after its last new member,
    # marked degraded. A member whose stage-2 order was sent and whose product
    # has not come (a stage-2 backlog) keeps it waiting up to
    # `stage3_stage2_wait` instead: 6 h is twice a stage-2 order's own worst
    # case (max_attempts x task_timeout = 3 h), room for a backlog as long.
    stage3_settle: float = 60.0
    stage3_quiet_period: float = 3600.0
    stage3_stage2_wait: float = 6 * 3600.0
    # Stage-3 runs combine many exposures: fewer, recycled workers bound memory.
    stage3_workers: int = 1
    stage3_max_tasks_per_worker: int = 10
    stage3_task_timeout: float = 4 * 3600.0
    stage3_worker_rss_limit_mb: int = 6144
    stage3_worker_run_memory_mb: int | None = None
    # When each stage's pool starts its workers (each a jwst import): with the
    # daemon ("at_start", hiding the import from the first exposure), on its
    # first item ("on_first_work"), or a list of the stages to warm at start
    # (deciders/pool_warming.py).
    warm_workers: list[str] = field(default_factory=lambda: [warming.AT_START])
    crds_context: str | None = None  # pin a context; default: CRDS_CONTEXT or the cache's
    fast_group_timing: bool = False  # short session timeouts for tests and the demo
    # Planners compete for a lease (a consumer group): the holder publishes,
    # the others stand by warm and take over when it dies (docs/operations.md).
    planner_lease: bool = False
    # Seconds a silent lease holder keeps it (the group's session timeout);
    # None: 2 with fast_group_timing, else Kafka's default 10.
    planner_lease_timeout: float | None = None
    # The planner's memory budget in MiB: over it after a snapshot, the planner
    # starts again from that snapshot, which keeps decided records compactly
    # (deciders/planner_memory.py). None: 3/4 of the container's memory limit,
    # if it has one; 0: no budget.
    planner_memory_mb: int | None = None
    json_logs: bool = False
    log_level: str = "INFO"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # Where each setting given explicitly came from ("file PATH", "env NAME",
    # "flag --name"); absent: the default.
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def lease_timeout(self) -> float:
        if self.planner_lease_timeout is not None:
            return self.planner_lease_timeout
        return 2.0 if self.fast_group_timing else 10.0

    def resolved(self) -> Config:
        """Fill in derived paths; validate."""
        c = dataclasses.replace(self)
        c.work_dir = Path(c.work_dir).absolute()
        c.inbox = Path(c.inbox or c.work_dir / "inbox").absolute()
        c.products = Path(c.products or c.work_dir / "products").absolute()
        c.quarantine = Path(c.quarantine or c.work_dir / "quarantine").absolute()
        c.allowed_roots = [Path(p).absolute() for p in (c.allowed_roots or [c.inbox])]
        c.products_moved_from = [Path(p).absolute() for p in c.products_moved_from]
        if problem := moved_roots_problem(map(str, c.products_moved_from), str(c.products)):
            raise ConfigError(problem)
        unknown = set(c.roles) - set(ROLES)
        if unknown:
            raise ConfigError(f"unknown role(s) {sorted(unknown)}; known: {list(ROLES)}")
        if c.workers < 1 or c.stage3_workers < 1:
            raise ConfigError("workers and stage3_workers must be at least 1")
        if c.worker_rss_limit_mb < 0 or c.stage3_worker_rss_limit_mb < 0:
            raise ConfigError("worker_rss_limit_mb and stage3_worker_rss_limit_mb must be >= 0 "
                              "(0: no limit)")
        if c.stage3_settle < 0 or c.stage3_quiet_period < c.stage3_settle:
            raise ConfigError("need 0 <= stage3_settle <= stage3_quiet_period")
        if c.stage3_stage2_wait < c.stage3_quiet_period:
            raise ConfigError("need stage3_quiet_period <= stage3_stage2_wait (a stage-2 "
                              "backlog is waited for longer than what never arrived)")
        if c.claim_stale_seconds < 2 * c.claim_heartbeat_seconds:
            raise ConfigError("claim_stale_seconds must be at least twice "
                              "claim_heartbeat_seconds (a live claim must not look stale)")
        if c.broker_timeout_seconds < 1:
            raise ConfigError("broker_timeout_seconds must be at least 1 (a busy broker "
                              "would be taken for a lost one)")
        for stall, timeout in (("stall_seconds", "task_timeout"),
                               ("stage3_stall_seconds", "stage3_task_timeout")):
            # A stall limit follows its time-out unless set: task_timeout
            # raised alone (7200 s for a slow mode) kept the limit at 4500 s,
            # and a legitimate 90-minute run paged CalstreamConsumerStalled.
            if stall not in c.sources:
                setattr(c, stall, getattr(c, timeout) + STALL_MARGIN)
            elif getattr(c, stall) <= getattr(c, timeout):
                log.warning("%s (%gs) is not above %s (%gs): a run that is legitimate until "
                            "its time-out will be taken for a stall (/readyz unready, "
                            "CalstreamConsumerStalled); unset, it is %s + %gs", stall,
                            getattr(c, stall), timeout, getattr(c, timeout), timeout,
                            STALL_MARGIN)
        host_port(c.metrics_address)
        if c.detector1_steps:
            log.warning("detector1_steps is deprecated: write [steps.calwebb_detector1.<step>] "
                        "(CALSTREAM_STEPS) instead; it is read as that table for now")
        return c

    def step_parameters(self) -> StepParameters:
        """The configured step parameters, the deprecated detector1_steps folded in."""
        steps = dict(self.steps)
        if self.detector1_steps:
            steps["calwebb_detector1"] = merge_steps(self.detector1_steps,
                                                     steps.get("calwebb_detector1"))
        return StepParameters(steps, self.steps_by_exp_type, self.steps_by_program)


# Every setting has its parser (config_parsers.py), and every parser its setting.
assert set(PARSERS) == ({f.name for f in dataclasses.fields(Config)} - {"security", "sources"}
                        | {f"security.{f.name}" for f in dataclasses.fields(KafkaSecurity)})


def _spell(name: str, source: str) -> str:
    """How the user wrote a setting's name, for messages."""
    if source == "environment":
        return "CALSTREAM_" + name.replace(".", "_").upper()
    if source == "command line":
        return "--" + name.replace("_", "-")
    return name


def _named(name: str, source: str, quote: bool = False) -> str:
    """The setting's name, and how it was spelled when that differs:
    "workers (CALSTREAM_WORKERS)"."""
    spelled = _spell(name, source)
    shown = repr(name) if quote else name
    return shown if spelled == name else f"{shown} ({spelled})"


def _set(cfg: Config, name: str, value: Any, source: str) -> None:
    try:
        parsed = PARSERS[name](value)
    except ValueError as exc:
        # A secret's value stays out of the message too.
        detail = "invalid (value not shown: a secret)" if name in values.SECRETS else str(exc)
        raise ConfigError(f"{source}: bad value for {_named(name, source)}: {detail}") from None
    target, attr = (cfg.security, name[9:]) if name.startswith("security.") else (cfg, name)
    setattr(target, attr, parsed)
    label = {"environment": "env", "command line": "flag"}.get(source)
    cfg.sources[name] = f"{label} {_spell(name, source)}" if label else f"file {source}"


def _apply(cfg: Config, given: dict[str, Any], source: str) -> None:
    for key, value in given.items():
        name = key.replace("-", "_")
        if name == "security" and isinstance(value, dict):
            for skey, svalue in value.items():
                _known(f"security.{skey}", source)
                _set(cfg, f"security.{skey}", svalue, source)
            continue
        if name.startswith("security_") and f"security.{name[9:]}" in PARSERS:
            name = f"security.{name[9:]}"
        _known(name, source)
        _set(cfg, name, value, source)


def _known(name: str, source: str) -> None:
    if name in PARSERS:
        return
    hint = did_you_mean(_spell(name, source), [_spell(n, source) for n in PARSERS])
    raise ConfigError(f"{source}: unknown setting {_named(name, source, quote=True)}{hint}")


def _settings_of(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The settings of a config file: its [calstream] table, or the whole file
    without one. Beside that table nothing is read, so anything else is an
    error: a `[security]` table (for [calstream.security]) or a key above the
    header was ignored without a word, and the default used instead."""
    if "calstream" not in data:
        return data
    settings = data["calstream"]
    if not isinstance(settings, dict):
        raise ConfigError(f"{source}: [calstream] must be a table of settings")
    for key in data:
        if key == "calstream":
            continue
        name = key.replace("-", "_")
        where = f"[calstream.{name}]" if name in ("security", "steps", "steps_by_exp_type",
                                                    "steps_by_program", "detector1_steps") \
            else f"[calstream] {name}" if name in PARSERS else None
        hint = f" (did you mean {where}?)" if where else ""
        raise ConfigError(f"{source}: {key!r} is outside the [calstream] table, where every "
                          f"setting goes, and would be ignored{hint}")
    return settings


def load(config_file: Path | None = None, env: dict[str, str] | None = None,
         flags: dict[str, Any] | None = None) -> Config:
    cfg = Config()
    cfg.sources = {}
    if config_file is not None:
        try:
            # Bounded and never a FIFO or device: ``--config <(...)`` that nobody
            # writes, or /dev/zero, held every command for ever.
            data = tomllib.loads(read_regular_text(config_file))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        _apply(cfg, _settings_of(data, str(config_file)), str(config_file))
    env = os.environ if env is None else env
    from_env = {k[len("CALSTREAM_"):].lower(): v for k, v in env.items()
                if k.startswith("CALSTREAM_") and k not in NOT_SETTINGS}
    _apply(cfg, from_env, "environment")
    _apply(cfg, {k: v for k, v in (flags or {}).items() if v is not None}, "command line")
    return cfg.resolved()
