import pytest

from calstream.topics.catalog import CATALOG, Topics


def test_every_topic_of_the_architecture_is_declared_once():
    logical = [s.logical for s in CATALOG]
    assert sorted(logical) == sorted(["raw", "replay", "products", "work.stage2", "work.stage3",
                                      "holds", "pointing", "plans", "deadletter",
                                      "work.stage2.replay", "work.stage3.replay", "promotions",
                                      "planner.lease"])
    assert len(set(logical)) == len(logical)


def test_prefix_names_and_inverse():
    t = Topics("ops.")
    assert t.name("raw") == "ops.raw"
    assert t.logical("ops.work.stage2") == "work.stage2"
    with pytest.raises(KeyError):
        t.name("rwa")
    with pytest.raises(KeyError):
        t.logical("other.raw")


def test_state_topics_are_compacted_and_streams_retained():
    t = Topics()
    assert t.spec("holds").config() == {"cleanup.policy": "compact"}
    # The unused "state" topic is gone: the planner rebuilds from the topics above.
    with pytest.raises(KeyError):
        t.spec("state")
    assert int(t.spec("raw").config()["retention.ms"]) >= 7 * 24 * 3600 * 1000
    # products is keyed by program so one planner instance sees a whole candidate
    assert t.spec("products").key == "program"


def test_work_orders_outlive_the_product_events_the_planner_rebuilds_from():
    # Otherwise a restart sends again every order that expired before its events.
    t = Topics()
    products = int(t.spec("products").config()["retention.ms"])
    for name in ("work.stage2", "work.stage3", "work.stage2.replay", "work.stage3.replay"):
        assert int(t.spec(name).config()["retention.ms"]) >= products, name
