"""One parser per setting, and the choices they accept.

Every value of a setting, from the TOML file, the environment or a flag,
goes through its parser here (built from config_values' parsers of a kind:
an int, a float, a path, a list, a table, a choice, with the bounds each
setting has). Kept apart from ``config`` (the settings' defaults, their
sources in order, the checks across settings): config.py checks that
``PARSERS`` names every setting of ``Config`` and no other.
"""

from __future__ import annotations

from typing import Any

from calstream.daemon.deciders import pool_warming as warming
from calstream.daemon.operations import config_values as values
from calstream.daemon.operations.config_values import ConfigError, host_port
from calstream.daemon.stages import STAGES
from calstream.steps import step_parameters

ROLES = ("watcher", "detector1", "planner", "stage2", "stage3")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


WEEK = 7 * 86400.0


def _nonnegative(parse):
    def check(value: Any):
        number = parse(value)
        if number < 0:
            raise ValueError(f"must be >= 0, got {number}")
        return number
    return check


def _at_most(limit: float, parse):
    """``parse``, refusing a number above ``limit`` (a wait the OS cannot time)."""
    def check(value: Any):
        number = parse(value)
        if number > limit:
            raise ValueError(f"must be <= {limit:g}, got {number}")
        return number
    return check


def _positive(parse):
    def check(value: Any):
        number = parse(value)
        if number <= 0:
            raise ValueError(f"must be > 0, got {number}")
        return number
    return check


def _bootstrap(value: Any) -> str:
    text = values.parse_str(value)
    for address in text.split(","):
        host_port(address.strip())
    return text


def _detector1_steps(value: Any) -> dict:
    """The deprecated Detector1Pipeline step table: {step: {parameter: value}}."""
    table = values.parse_table(value)
    return step_parameters.parse_pipeline_steps(
        {"calwebb_detector1": table}, "detector1_steps").get("calwebb_detector1", {})


def _warm_workers(value: Any) -> list[str]:
    return warming.check_warm_workers(values.parse_list(value, values.parse_str),
                                      (s.name for s in STAGES))


def _tables(parse):
    """A table setting (TOML table, or inline TOML/JSON in the environment), checked."""
    return lambda value: parse(values.parse_table(value))


def _address(value: Any) -> str:
    text = values.parse_str(value)
    try:
        host_port(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return text


_int, _float, _path = values.parse_int, values.parse_float, values.parse_path
# One parser per setting (dotted names inside the security table).
PARSERS = {
    "work_dir": _path, "inbox": values.optional(_path), "products": values.optional(_path),
    "quarantine": values.optional(_path),
    "allowed_roots": lambda v: values.parse_list(v, _path),
    "products_moved_from": lambda v: values.parse_list(v, _path),
    "kafka_bootstrap": values.optional(_bootstrap),
    "broker_storage": values.parse_str, "topic_prefix": values.parse_str,
    "group_prefix": values.parse_str,
    "roles": lambda v: values.parse_list(v, values.parse_choice(ROLES)),
    "workers": _positive(_int), "metrics_address": _address,
    "polling": values.parse_bool, "poll_interval": _positive(_float),
    "settle_seconds": _nonnegative(_float), "incomplete_timeout": _nonnegative(_float),
    "max_attempts": _positive(_int), "retry_backoff": _nonnegative(_float),
    "park_recheck_seconds": _positive(_float), "max_parked_aside": _nonnegative(_int),
    "task_timeout": _positive(_float), "stall_seconds": _positive(_float),
    "stage3_stall_seconds": _positive(_float), "heartbeat_seconds": _positive(_float),
    "broker_loss_seconds": _positive(_float),
    # Every client's request time-out and a socket's: beyond a week, a wait the OS cannot time.
    "broker_timeout_seconds": _at_most(WEEK, _positive(_float)),
    "claim_heartbeat_seconds": _positive(_float), "claim_stale_seconds": _positive(_float),
    "max_tasks_per_worker": _positive(_int), "worker_rss_limit_mb": _nonnegative(_int),
    "worker_run_memory_mb": values.optional(_nonnegative(_int)),
    # A worker waits this long in poll(), which refuses a timeout beyond ~1e9 s.
    "worker_idle_return_seconds": _at_most(WEEK, _nonnegative(_float)),
    "worker_server_hung_seconds": _at_most(WEEK, _positive(_float)),
    "worker_stopped_seconds": _at_most(WEEK, _nonnegative(_float)),
    "max_cores_per_exposure": _positive(_int), "multicore_min_mb": _nonnegative(_float),
    "preview_max_wait": _at_most(WEEK, _nonnegative(_float)),  # beyond: never drawn, in effect
    "steps": _tables(step_parameters.parse_pipeline_steps),
    "steps_by_exp_type": _tables(step_parameters.parse_by_exp_type),
    "steps_by_program": _tables(step_parameters.parse_by_program),
    "detector1_steps": _detector1_steps, "companion_wait": _nonnegative(_float),
    "stage3_settle": _nonnegative(_float), "stage3_quiet_period": _nonnegative(_float),
    "stage3_stage2_wait": _nonnegative(_float),
    "stage3_workers": _positive(_int), "stage3_max_tasks_per_worker": _positive(_int),
    "stage3_task_timeout": _positive(_float), "stage3_worker_rss_limit_mb": _nonnegative(_int),
    "stage3_worker_run_memory_mb": values.optional(_nonnegative(_int)),
    "warm_workers": _warm_workers,
    "crds_context": values.optional(values.parse_str),
    "fast_group_timing": values.parse_bool, "json_logs": values.parse_bool,
    "create_topics": values.parse_bool,
    "planner_lease": values.parse_bool,
    "planner_lease_timeout": values.optional(_positive(_float)),
    "planner_memory_mb": values.optional(_nonnegative(_int)),
    "log_level": values.parse_choice(LOG_LEVELS, upper=True),
    "security.protocol": values.parse_choice(PROTOCOLS, upper=True),
    "security.sasl_mechanism": values.optional(values.parse_choice(SASL_MECHANISMS, upper=True)),
    "security.sasl_username": values.optional(values.parse_str),
    "security.sasl_password": values.optional(values.parse_str),
    "security.ssl_cafile": values.optional(values.parse_str),
    "security.ssl_certfile": values.optional(values.parse_str),
    "security.ssl_keyfile": values.optional(values.parse_str),
}
