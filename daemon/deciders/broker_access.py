"""Who may write which topic: the one table behind the broker's ACLs (pure).

A record on a calstream topic is believed as far as the checks on its way in
go (the file's own headers, the roots, the association rules), but a record
that passes them can still be a lie: a forged work order that releases a
held exposure, a forged plan, a forged hold record. What stops those is that
only the planner can write the planner's topics. The broker enforces that
(ACLs, one principal per role); this table says what each principal needs,
``calstream topics acls`` prints it as commands, and the daemon's publisher
refuses, as the broker would, a write its roles are not granted here
(doers/kafka/publisher.py), so that every test run also checks the table
against what the code really sends.

Reading is not where forgery lives: every calstream principal may read and
describe every calstream topic and group, and create the catalog's topics
(each daemon creates what is missing at start), unless the site's admin
creates them (``create=False``: a daemon denied Create waits for them).
"""

from __future__ import annotations

import shlex

from calstream.daemon.stages import STAGES, work_order_stages

# What a daemon of each role sends, as logical topic names (topics/catalog.py).
# Every daemon sends its dead letters, and puts them back on a broker that
# lost them (doers/broker_recovery.py).
_WORK_TOPICS = tuple(t for s in work_order_stages() for t in (s.live_topic, s.replay_topic))
ROLE_WRITES: dict[str, tuple[str, ...]] = {
    "watcher": ("raw", "deadletter"),
    # Every stage's workers send product events; the arrival stage, too, for
    # dark and guider runs (stages.py).
    **{s.name: ("products", "deadletter") for s in STAGES},
    # Orders (live and replayed), holds, and what a broker that lost its
    # topics gets again from the planner's ledger and the product store:
    # plans, holds and product events (broker_recovery.py).
    "planner": (*_WORK_TOPICS, "holds", "plans", "products", "deadletter"),
}

# The operators' commands: replay (into the replay topics), promote, holds
# release (pointing), plans load, and redrive, which sends a dead letter's
# record back to the topic it came from (cli/deadletters.py
# ``redrivable_topics``): any topic calstream consumes. An operator can
# therefore write a work order; that is the operator's authority, and why
# this principal is for people, not for programs. A redrive also puts its
# dead letter back with its mark (the planner reads the deadletter topic:
# a redriven stage-2 order is in flight again), so an operator writes
# ``deadletter`` too: a mark there is trusted as a daemon's is.
OPERATOR = "operator"
OPERATOR_WRITES: tuple[str, ...] = (
    "raw", "replay", *_WORK_TOPICS, "products", "pointing", "plans", "promotions",
    "deadletter")

# Downstream subscribers (calstream subscribe and their own programs) read only.
SUBSCRIBER = "subscriber"

PRINCIPALS: tuple[str, ...] = (*ROLE_WRITES, OPERATOR, SUBSCRIBER)


def writes_of(principal: str) -> tuple[str, ...]:
    """The logical topics ``principal`` (a role, ``operator`` or
    ``subscriber``) may write."""
    if principal == OPERATOR:
        return OPERATOR_WRITES
    if principal == SUBSCRIBER:
        return ()
    try:
        return ROLE_WRITES[principal]
    except KeyError:
        raise KeyError(f"unknown principal {principal!r}; known: {list(PRINCIPALS)}") from None


def granted_writes(roles: list[str] | tuple[str, ...]) -> frozenset[str]:
    """What a daemon running ``roles`` together may write (the union: the
    embedded default runs every role under one principal)."""
    return frozenset(t for role in roles for t in writes_of(role))


def acl_commands(topic_prefix: str, group_prefix: str, principal_of: str,
                 known_topics: list[str], *, create: bool = True) -> list[str]:
    """``kafka-acls.sh`` commands granting each principal what it needs.

    ``principal_of``: the principal's name with ``{role}`` in it, e.g.
    ``User:calstream-{role}``; ``known_topics``: the catalog's logical names
    (a write to a name not in it would be a typo in this table). ``create``
    False: no principal may create topics (a site whose admin creates them
    once, ``calstream topics create``; its daemons wait for missing ones,
    and run with ``create_topics = false`` not to ask)."""
    if "{role}" not in principal_of:
        raise ValueError("the principal pattern must contain {role}")
    unknown = sorted({t for p in PRINCIPALS for t in writes_of(p)} - set(known_topics))
    if unknown:
        raise ValueError(f"the access table names topics the catalog does not: {unknown}")
    add = 'kafka-acls.sh --bootstrap-server "$KAFKA" --command-config "$ADMIN_CONFIG" --add'
    lines = []
    for p in PRINCIPALS:
        # Replaced, not str.format: any other brace in the operator's pattern
        # is text (format raised on it); quoted, as every name is, for the shell.
        who = f"--allow-principal {shlex.quote(principal_of.replace('{role}', p))}"
        lines.append(f"# {p}")
        read = "--operation Read --operation Describe"
        lines.append(f"{add} {who} {read} --topic {shlex.quote(topic_prefix)} "
                     "--resource-pattern-type prefixed")
        lines.append(f"{add} {who} {read} --group {shlex.quote(group_prefix)} "
                     "--resource-pattern-type prefixed")
        if p != SUBSCRIBER:
            create_op = "--operation Create " if create else ""
            lines.append(f"{add} {who} {create_op}--operation DescribeConfigs "
                         f"--topic {shlex.quote(topic_prefix)} --resource-pattern-type prefixed")
        for logical in writes_of(p):
            lines.append(f"{add} {who} --operation Write "
                         f"--topic {shlex.quote(topic_prefix + logical)}")
    return lines
