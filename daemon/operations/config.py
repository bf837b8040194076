"""Configuration: defaults < TOML file < CALSTREAM_* environment < command-line flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("watcher", "detector1", "planner", "stage2", "stage3")


class ConfigError(ValueError):
    pass


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


@dataclass
class Config:
    work_dir: Path = Path("calstream-work")
    inbox: Path | None = None  # default: <work_dir>/inbox
    products: Path | None = None  # default: <work_dir>/products
    quarantine: Path | None = None  # default: <work_dir>/quarantine
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
    task_timeout: float = 3600.0  # a run that takes longer is killed and retried
    stall_seconds: float = 900.0  # /readyz: work waiting, nothing finished for this long
    max_tasks_per_worker: int = 200  # recycle workers to bound memory growth
    # A worker holding more than this resident after a run is replaced (0: never).
    worker_rss_limit_mb: int = 3072
    detector1_steps: dict[str, Any] = field(default_factory=dict)
    companion_wait: float = 3600.0  # a stage-2 companion that never comes stops blocking
    # Stage 3. A candidate a plan covers closes when its last member is
    # calibrated. Without a plan: `stage3_settle` after its visits are complete
    # by their headers (a later visit of the observation may still come, and
    # would supersede), else `stage3_quiet_period` after its last new member,
    # marked degraded.
    stage3_settle: float = 60.0
    stage3_quiet_period: float = 3600.0
    # Stage-3 runs combine many exposures: fewer, recycled workers bound memory.
    stage3_workers: int = 1
    stage3_max_tasks_per_worker: int = 10
    stage3_task_timeout: float = 4 * 3600.0
    stage3_worker_rss_limit_mb: int = 6144
    crds_context: str | None = None  # pin a context; default: CRDS_CONTEXT or the cache's
    fast_group_timing: bool = False  # short session timeouts for tests and the demo
    json_logs: bool = False
    log_level: str = "INFO"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def resolved(self) -> Config:
        """Fill in derived paths; validate."""
        c = dataclasses.replace(self)
        c.work_dir = Path(c.work_dir).absolute()
        c.inbox = Path(c.inbox or c.work_dir / "inbox").absolute()
        c.products = Path(c.products or c.work_dir / "products").absolute()
        c.quarantine = Path(c.quarantine or c.work_dir / "quarantine").absolute()
        c.allowed_roots = [Path(p).absolute() for p in (c.allowed_roots or [c.inbox])]
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
        host_port(c.metrics_address)
        return c


def host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {address!r} is not HOST:PORT")
    return host or "0.0.0.0", int(port)


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_SECURITY = {f.name: f for f in dataclasses.fields(KafkaSecurity)}


def _coerce(name: str, value: Any, current: Any) -> Any:
    """Strings from the environment become the field's type."""
    if not isinstance(value, str):
        return value
    if isinstance(current, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, list):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _apply(cfg: Config, values: dict[str, Any], source: str) -> None:
    for key, value in values.items():
        name = key.replace("-", "_")
        if name == "security" and isinstance(value, dict):
            for skey, svalue in value.items():
                if skey not in _SECURITY:
                    raise ConfigError(f"{source}: unknown security setting {skey!r}")
                setattr(cfg.security, skey, svalue)
            continue
        if name.startswith("security_") and name[9:] in _SECURITY:
            setattr(cfg.security, name[9:], value)
            continue
        if name not in _FIELDS:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        try:
            setattr(cfg, name, _coerce(name, value, getattr(cfg, name)))
        except ValueError as exc:
            raise ConfigError(f"{source}: bad value for {key!r}: {exc}") from None


def load(config_file: Path | None = None, env: dict[str, str] | None = None,
         flags: dict[str, Any] | None = None) -> Config:
    cfg = Config()
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        _apply(cfg, data.get("calstream", data), str(config_file))
    env = os.environ if env is None else env
    from_env = {k[len("CALSTREAM_"):].lower(): v for k, v in env.items()
                if k.startswith("CALSTREAM_") and k not in ("CALSTREAM_CONFIG", "CALSTREAM_BROKER_LOG")}
    _apply(cfg, from_env, "environment")
    _apply(cfg, {k: v for k, v in (flags or {}).items() if v is not None}, "command line")
    return cfg.resolved()
