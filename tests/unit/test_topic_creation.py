"""Reading a broker's CreateTopics answers (deciders/topic_creation.py): a
refusal is in the answer, per topic, and the client does not raise it;
taken for a success, a daemon denied Create ran on without its topics."""

from __future__ import annotations

from calstream.daemon.deciders import topic_creation


def test_created_existing_and_refused_topics_are_told_apart():
    created, refused = topic_creation.answers([
        ("cs.raw", 0, None), ("cs.plans", 36, "Topic with this name already exists."),
        ("cs.holds", 29, "Authorization failed."), ("cs.products", 31, None),
        ("cs.deadletter", 44, "x" * 10_000)])
    assert created == ["cs.raw"]  # one that exists already is neither: it is there
    assert sorted(refused) == ["cs.deadletter", "cs.holds", "cs.products"]
    assert "TOPIC_AUTHORIZATION_FAILED" in refused["cs.holds"]
    assert "an admin creates it" in refused["cs.holds"]
    assert "CLUSTER_AUTHORIZATION_FAILED" in refused["cs.products"]
    assert "error code 44" in refused["cs.deadletter"]
    assert len(refused["cs.deadletter"]) < 400  # the broker's own text, bounded
    assert topic_creation.answers([("cs.raw", 0)]) == (["cs.raw"], {})  # v0: no message


def test_the_summary_names_the_topics_grouped_by_reason_and_bounded():
    missing = {f"cs.t{n:02}": topic_creation.NOT_TRIED for n in range(20)}
    missing["cs.x"] = topic_creation.why_refused(29)
    text = topic_creation.summary(missing)
    assert text.startswith("21 topic(s) missing: ")
    assert "cs.t00, cs.t01, cs.t02, cs.t03, cs.t04 and 15 more: not created" in text
    assert "cs.x: not authorized" in text
    assert len(text) < 800


def test_a_daemon_on_its_embedded_broker_makes_its_topics_whatever_create_topics_says(tmp_path):
    """``create_topics = false`` leaves topics to an admin; an embedded broker has
    none: its daemon made them at start but not after the broker was restarted
    empty (after_broker_back reads ``create_topics``), and waited for ever."""
    from calstream.daemon.operations.config import load
    from calstream.daemon.runtime import Daemon

    external = Daemon(load(None, env={}, flags={"work_dir": tmp_path / "a",
                                                "kafka_bootstrap": "broker:9092",
                                                "create_topics": False}))
    external.start_broker()
    assert external.broker is None and external.cfg.create_topics is False  # the admin's
    embedded = Daemon(load(None, env={}, flags={"work_dir": tmp_path / "b",
                                                "create_topics": False}))
    try:
        embedded.start_broker()
        assert embedded.broker is not None and embedded.cfg.create_topics is True
    finally:
        embedded.broker._release_reservation()


class _Admin:
    """The broker's answers as aiokafka's admin client hands them: a listing
    of every topic that leaves out those this principal may not describe
    (or the broker errs on), and the metadata of topics asked by name, an
    error code each (tansu has no ACLs to make the first happen)."""

    def __init__(self, listed: list[str], by_name: dict[str, int]):
        self.listed, self.by_name, self.asked = listed, by_name, []

    async def start(self):
        pass

    async def close(self):
        pass

    async def list_topics(self):
        return self.listed

    async def _send_request(self, request):
        from types import SimpleNamespace
        self.asked.append(request)
        return SimpleNamespace(to_object=lambda: {"topics": [
            {"topic": t, "error_code": self.by_name[t]} for t in request._topics]})


def test_a_topic_left_out_of_the_listing_is_missing_for_what_the_broker_says_of_it(monkeypatch):
    """``create_topics = false``: each topic the listing leaves out was
    "not created by this daemon ... an admin creates it", also one there
    that this principal may not describe (the admin who came to create it
    found it there). Now asked for by name, never auto-created."""
    import anyio
    import pytest

    from calstream.daemon.doers.kafka import topic_admin
    from calstream.daemon.operations.config import load
    from calstream.topics.catalog import Topics

    topics = Topics("cs.")
    names = [name for name, _ in topics.all()]
    undescribed, erring, absent, made_meanwhile = names[:4]
    client = _Admin(names[4:], {undescribed: 29, erring: 5, absent: 3, made_meanwhile: 0})
    monkeypatch.setattr(topic_admin, "admin", lambda cfg: client)
    cfg = load(None, env={}, flags={"kafka_bootstrap": "broker:9092"})
    with pytest.raises(topic_admin.TopicsMissing) as raised:
        anyio.run(lambda: topic_admin.create_topics(cfg, topics, create=False))
    missing = raised.value.missing
    assert sorted(missing) == sorted([undescribed, erring, absent])  # the fourth is there
    assert "may not describe it (TOPIC_AUTHORIZATION_FAILED)" in missing[undescribed]
    assert "LEADER_NOT_AVAILABLE, error code 5" in missing[erring]
    assert missing[absent] == topic_creation.NOT_TRIED
    [asked] = client.asked
    assert asked._allow_auto_topic_creation is False  # asking never makes one


def test_an_admin_client_without_the_by_name_lookup_reports_each_left_out_topic_not_created(
        monkeypatch):
    """The by-name lookup is aiokafka's private call: a client version
    without it must not end the start with an AttributeError; every topic
    the listing leaves out is reported as before the lookup (not created)."""
    import anyio
    import pytest

    from calstream.daemon.doers.kafka import topic_admin
    from calstream.daemon.operations.config import load
    from calstream.topics.catalog import Topics

    topics = Topics("cs.")
    names = [name for name, _ in topics.all()]
    client = _Admin(names[1:], {})
    del_lookup = type("NoLookup", (_Admin,), {"_send_request": property(
        lambda self: (_ for _ in ()).throw(AttributeError("_send_request")))})
    client.__class__ = del_lookup
    monkeypatch.setattr(topic_admin, "admin", lambda cfg: client)
    cfg = load(None, env={}, flags={"kafka_bootstrap": "broker:9092"})
    with pytest.raises(topic_admin.TopicsMissing) as raised:
        anyio.run(lambda: topic_admin.create_topics(cfg, topics, create=False))
    assert raised.value.missing == {names[0]: topic_creation.NOT_TRIED}
