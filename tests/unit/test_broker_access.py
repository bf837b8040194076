"""The table behind the broker's ACLs: who may write which topic."""

import pytest

from calstream.daemon.deciders import broker_access
from calstream.daemon.deciders.broker_access import (
    OPERATOR,
    PRINCIPALS,
    SUBSCRIBER,
    acl_commands,
    granted_writes,
    writes_of,
)
from calstream.daemon.operations.config import ROLES
from calstream.topics.catalog import CATALOG, Topics

KNOWN = [s.logical for s in CATALOG]


def test_every_role_has_a_row_and_names_only_catalog_topics():
    assert set(broker_access.ROLE_WRITES) == set(ROLES)
    for p in PRINCIPALS:
        assert set(writes_of(p)) <= set(KNOWN), p
    with pytest.raises(KeyError):
        writes_of("nobody")


def test_only_the_planner_writes_the_planner_s_records():
    """What a forged record would have to be: a work order, a hold, a plan."""
    planner_only = {"work.stage2", "work.stage3", "holds"}
    for role in ROLES:
        if role != "planner":
            assert not planner_only & set(writes_of(role)), role
    assert planner_only <= set(writes_of("planner"))
    assert "holds" not in writes_of(OPERATOR)  # operators release through `pointing`
    # Nobody but the watcher (and an operator's redrive) announces a file.
    assert [r for r in ROLES if "raw" in writes_of(r)] == ["watcher"]
    assert writes_of(SUBSCRIBER) == ()
    assert not any("planner.lease" in writes_of(p) for p in PRINCIPALS)  # never written


def test_a_daemon_of_several_roles_may_write_what_each_may():
    assert granted_writes(["watcher", "stage2"]) == {"raw", "products", "deadletter"}
    assert granted_writes(list(ROLES)) == {t for r in ROLES for t in writes_of(r)}


def test_the_commands_grant_each_principal_its_writes_and_nothing_more():
    lines = acl_commands("calstream.", "calstream", "User:cs-{role}", KNOWN)
    writes = {}
    for line in lines:
        if "--operation Write" in line:
            who = line.split("--allow-principal ")[1].split()[0]
            writes.setdefault(who, set()).add(line.split("--topic ")[1].split()[0])
            assert "prefixed" not in line  # a write is to one named topic
    assert writes == {f"User:cs-{p}": {f"calstream.{t}" for t in writes_of(p)}
                      for p in PRINCIPALS if writes_of(p)}
    reads = [line for line in lines if "--operation Read" in line]
    assert len(reads) == 2 * len(PRINCIPALS)  # every topic and every group, prefixed
    assert all("--resource-pattern-type prefixed" in line for line in reads)
    # Subscribers create nothing (each daemon creates the catalog's missing topics).
    assert not [line for line in lines if "cs-subscriber" in line and "Create" in line]


def test_the_commands_refuse_a_pattern_without_the_role_or_an_unknown_topic():
    with pytest.raises(ValueError, match="role"):
        acl_commands("calstream.", "calstream", "User:calstream", KNOWN)
    with pytest.raises(ValueError, match="catalog"):
        acl_commands("calstream.", "calstream", "User:{role}", ["raw"])


def test_a_topic_prefix_is_used_as_the_daemon_uses_it():
    topics = Topics("site-a.")
    lines = acl_commands(topics.prefix, "site-a", "User:{role}", KNOWN)
    assert f"--topic {topics.name('work.stage2')}" in "\n".join(lines)


def test_the_operator_may_write_wherever_a_redrive_sends_a_record():
    from calstream.daemon.operations.cli.deadletters import redrivable_topics

    topics = Topics("calstream.")
    assert redrivable_topics(topics) <= {topics.name(t) for t in writes_of(OPERATOR)}
    # And its dead letter, put back with the redrive's mark, which the
    # planner reads (a redriven stage-2 order is in flight again).
    assert "deadletter" in writes_of(OPERATOR)


def test_an_operator_s_pattern_and_prefixes_are_text_for_the_shell():
    """Braces other than {role} raised out of str.format (a traceback); a
    space or a ';' in a name went into the commands as shell syntax."""
    import shlex

    lines = acl_commands("site a;", "g$x", "User:{role}-{x} y", KNOWN)
    writes = [shlex.split(line) for line in lines if "--operation Write" in line]
    principals = {w[w.index("--allow-principal") + 1] for w in writes}
    assert "User:planner-{x} y" in principals and "User:watcher-{x} y" in principals
    assert all(w[w.index("--topic") + 1].startswith("site a;") for w in writes)
    groups = [shlex.split(line) for line in lines if "--group" in line]
    assert all(g[g.index("--group") + 1] == "g$x" for g in groups)


def test_without_create_no_principal_may_create_and_the_rest_is_the_same():
    """A site whose admin creates the topics once denies Create to every
    principal (its daemons wait for missing topics: deciders/topic_creation.py)."""
    strict = acl_commands("calstream.", "calstream", "User:cs-{role}", KNOWN, create=False)
    usual = acl_commands("calstream.", "calstream", "User:cs-{role}", KNOWN)
    assert not [line for line in strict if "Create" in line]
    assert len([line for line in usual if "--operation Create" in line]) == len(PRINCIPALS) - 1
    assert [line.replace("--operation Create ", "") for line in usual] == strict
