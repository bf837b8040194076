"""Every topic calstream uses, declared once.

Names get a configurable prefix so several deployments (or test runs) can
share one broker. Partition counts are defaults for a small deployment;
production sets them per topic through configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    logical: str  # name without prefix, e.g. "raw"
    key: str  # what the message key is, for humans and docs
    message: str | None  # message type (schema name) carried, None = free form
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None  # None = broker default / infinite for compacted
    writers: str = ""
    readers: str = ""

    def config(self) -> dict[str, str]:
        """Topic-level configuration for CreateTopics."""
        cfg: dict[str, str] = {}
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


# Retention: raw and products are the replay sources, so they keep weeks.
# Work orders are kept as long as product events: a restarted planner
# rebuilds from every retained product event and learns what it already
# ordered from the work topics; an order that expired before its product
# events would be sent again, for every exposure of those weeks.
PRODUCT_EVENTS_MS = 90 * DAY_MS
CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec("raw", "exposure id", "arrival", 4, retention_ms=30 * DAY_MS,
              writers="watcher", readers="detector1 workers"),
    TopicSpec("replay", "exposure id", "arrival", 4, retention_ms=7 * DAY_MS,
              writers="calstream replay", readers="detector1 workers (low priority)"),
    TopicSpec("products", "program", "product", 4, retention_ms=PRODUCT_EVENTS_MS,
              writers="every worker", readers="planner, downstream subscribers"),
    TopicSpec("work.stage2", "product name", "work_order", 4, retention_ms=PRODUCT_EVENTS_MS,
              writers="planner", readers="stage-2 workers"),
    TopicSpec("work.stage3", "product name", "work_order", 4, retention_ms=PRODUCT_EVENTS_MS,
              writers="planner", readers="stage-3 workers"),
    # Replayed work orders: the same messages, read by the same workers at low
    # priority (a topic of their own, so live orders never wait behind them).
    TopicSpec("work.stage2.replay", "product name", "work_order", 4, retention_ms=PRODUCT_EVENTS_MS,
              writers="planner, calstream replay --from stage2",
              readers="stage-2 workers (low priority)"),
    TopicSpec("work.stage3.replay", "product name", "work_order", 4, retention_ms=PRODUCT_EVENTS_MS,
              writers="planner, calstream replay --from stage3",
              readers="stage-3 workers (low priority)"),
    TopicSpec("promotions", "namespace", "promotion", 1, retention_ms=3650 * DAY_MS,
              writers="calstream promote", readers="subscribers, operators"),
    TopicSpec("holds", "exposure id", "hold", 1, compacted=True,
              writers="planner", readers="planner, operators"),
    TopicSpec("pointing", "exposure id", "pointing_update", 1, retention_ms=30 * DAY_MS,
              writers="operators, pointing tools", readers="planner"),
    TopicSpec("plans", "program", "plan", 1, retention_ms=180 * DAY_MS,
              writers="calstream plan load", readers="planner"),
    # Nothing is written here: planners join a consumer group on it, and the
    # member assigned its one partition is the active planner (planner_lease).
    TopicSpec("planner.lease", "none (never written)", None, 1, retention_ms=DAY_MS,
              writers="nobody", readers="planners (their consumer group holds the lease)"),
    TopicSpec("deadletter", "original key", "dead_letter", 1, retention_ms=90 * DAY_MS,
              writers="anyone", readers="operators"),
)


@dataclass(frozen=True)
class Topics:
    """Resolves logical names to broker names under a prefix."""

    prefix: str = "calstream."
    specs: tuple[TopicSpec, ...] = field(default=CATALOG)

    def name(self, logical: str) -> str:
        self.spec(logical)  # a typo in a logical name must fail loudly
        return f"{self.prefix}{logical}"

    def spec(self, logical: str) -> TopicSpec:
        found = self._by_logical.get(logical)
        if found is None:
            raise KeyError(f"unknown topic {logical!r}; known: {[s.logical for s in self.specs]}")
        return found

    @cached_property
    def _by_logical(self) -> dict[str, TopicSpec]:
        # Asked for several times per planner record (a scan of the catalog
        # each time was 2-3 % of a planner's event in a daemon); the first of
        # a name wins, as the scan found it.
        by_logical: dict[str, TopicSpec] = {}
        for s in self.specs:
            by_logical.setdefault(s.logical, s)
        return by_logical

    def logical(self, name: str) -> str:
        """Inverse of name(): broker name -> logical name."""
        if not name.startswith(self.prefix):
            raise KeyError(f"topic {name!r} is not under prefix {self.prefix!r}")
        logical = name[len(self.prefix):]
        self.spec(logical)
        return logical

    def all(self) -> list[tuple[str, TopicSpec]]:
        return [(self.name(s.logical), s) for s in self.specs]
