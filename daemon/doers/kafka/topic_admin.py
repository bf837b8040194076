"""The broker's administration: the catalog's topics and the groups' offsets."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from calstream.daemon.deciders import topic_creation
from calstream.daemon.doers.kafka.clients import admin
from calstream.daemon.operations.config import Config
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.kafka")


class TopicsMissing(Exception):
    """Catalog topics the broker lacks and this daemon did not create
    (refused, or not tried): ``missing`` topic -> why. Waited for at start
    (doers/start_waits.py): an admin creating them ends the wait."""

    def __init__(self, missing: dict[str, str]):
        super().__init__(topic_creation.summary(missing))
        self.missing = missing


async def create_topics(cfg: Config, topics: Topics, *, replication: int = 1,
                        create: bool = True) -> list[str]:
    """Create every catalog topic that does not exist yet; returns those
    created. TopicsMissing if any is still missing: the broker refused it
    (in its answer, which the client does not raise: a principal without
    Create), or ``create`` is False (the daemon is not to try: each is
    asked for by name, and what the broker says of it is the reason)."""
    client = admin(cfg)
    try:
        await client.start()  # inside: a start that waits for its broker retries this
        existing = set(await client.list_topics())
        missing = [(name, spec) for name, spec in topics.all() if name not in existing]
        created: list[str] = []
        refused: dict[str, str] = {}
        if not create and missing:
            answered = await _errors_for(client, [name for name, _ in missing])
            refused = {name: why for name, _ in missing
                       if (why := topic_creation.why_absent(answered.get(name))) is not None}
            missing = []
        for name, spec in missing:
            try:
                answer = await client.create_topics([NewTopic(name, spec.partitions, replication,
                                                              topic_configs=spec.config())])
            except TopicAlreadyExistsError:
                continue  # another role created it meanwhile
            made, not_made = topic_creation.answers(answer.topic_errors)
            created += made
            refused.update(not_made)
        if created:
            log.info("created topics: %s", ", ".join(created))
        if refused:
            raise TopicsMissing(refused)
        return created
    finally:
        await client.close()


async def _errors_for(client, names: list[str]) -> dict[str, int]:
    """The error code the broker's metadata answers for each of ``names``,
    asked by name, never creating one (a broker with
    auto.create.topics.enable would make it, with its defaults, where the
    daemon was told not to: aiokafka's ``describe_topics`` asks with
    allow_auto_topic_creation, so its request is sent here without)."""
    try:  # aiokafka's private call (0.11-0.14): another version may lack it
        answer = await client._send_request(
            MetadataRequest(names, allow_auto_topic_creation=False))
        return {t["topic"]: t["error_code"] for t in answer.to_object()["topics"]}
    except (AttributeError, TypeError, KeyError):
        return {}  # nothing known: each missing topic said "not created", as before


async def describe_catalog(cfg: Config, topics: Topics) -> list[dict[str, Any]]:
    """The catalog's topics as the broker has them (missing ones marked)."""
    client = admin(cfg)
    await client.start()
    try:
        existing = set(await client.list_topics())
        present = [name for name, _ in topics.all() if name in existing]
        partitions: dict[str, int] = {}
        if present:
            for t in await client.describe_topics(present):
                partitions[t["topic"]] = len(t.get("partitions", []))
        rows = []
        for name, spec in topics.all():
            rows.append({"topic": name, "exists": name in existing,
                         "partitions": partitions.get(name), "key": spec.key,
                         "message": spec.message or "-",
                         "policy": "compact" if spec.compacted else
                         (f"retain {spec.retention_ms // 86400000} d" if spec.retention_ms else "-")})
        others = sorted(existing - {name for name, _ in topics.all()})
        return rows + [{"topic": o, "exists": True, "partitions": None, "key": "", "message": "",
                        "policy": "(not calstream's)"} for o in others]
    finally:
        await client.close()


async def group_offsets(cfg: Config, group: str, partitions: list[TopicPartition]
                        ) -> tuple[dict[TopicPartition, int | None], int | None, str | None]:
    """A group's committed offsets (None: nothing committed), member count and state."""
    client = admin(cfg)
    try:
        await client.start()
        # Partitions are listed explicitly: tansu cannot answer "all partitions"
        # (an OffsetFetch without them).
        found = await client.list_consumer_group_offsets(group, partitions=partitions)
        members = state = None
        try:
            for response in await client.describe_consumer_groups([group]):
                for g in response.groups:
                    state, members = g[2], len(g[5])
        except Exception as exc:  # informative only; lag does not depend on it
            log.debug("describe %s failed: %s", group, exc)
        offsets: dict[TopicPartition, int | None] = {}
        for tp in partitions:
            om = found.get(TopicPartition(tp.topic, tp.partition))
            offsets[tp] = om.offset if om is not None and om.offset >= 0 else None
        return offsets, members, state
    finally:
        await client.close()
