"""Whether an external broker lost its records while it kept answering
(deciders/broker_records.py): a topic or partition gone, or a partition's
end lower than the one seen before; never a broker that kept them."""

from __future__ import annotations

import time

import pytest

from calstream.daemon.deciders.broker_records import BrokerRecords, lost_since
from calstream.daemon.doers.broker_supervisor import BrokerSupervisor
from calstream.daemon.operations.metrics import Metrics

HAD = {("p.deadletter", 0): 3, ("p.products", 0): 10, ("p.products", 1): 0,
       ("p.holds", 0): 2}


def test_the_first_check_only_sets_what_the_next_is_compared_with():
    records = BrokerRecords()
    assert records.observe({("p.products", 0): 0}) is None
    assert records.seen == {("p.products", 0): 0}


@pytest.mark.parametrize("now", [
    HAD,  # nothing new
    {**HAD, ("p.products", 0): 12, ("p.products", 1): 1},  # records added
    {**HAD, ("p.raw", 0): 0},  # a topic made since
    {**HAD, ("p.products", 2): 0},  # a partition added
])
def test_a_broker_that_kept_its_records_lost_nothing(now):
    """Also a Kafka started again with its data: its ends are where they were."""
    records = BrokerRecords()
    records.observe(HAD)
    assert records.observe(now) is None


def test_a_topic_gone_is_a_loss_even_an_empty_one():
    assert lost_since(HAD, {k: v for k, v in HAD.items() if k[0] != "p.holds"}) \
        == "topic(s) gone: p.holds"
    assert lost_since({("p.raw", 0): 0}, {}) == "topic(s) gone: p.raw"


def test_a_partition_gone_is_a_loss():
    now = {k: v for k, v in HAD.items() if k != ("p.products", 1)}
    assert lost_since(HAD, now) == "partition(s) gone: p.products[1]"


def test_an_end_that_went_back_is_a_loss():
    """tansu started again empty, its topics made again by a client (4
    partitions each, whatever they had) and a record or two sent: the
    ends are lower than before, though every topic is there."""
    now = {("p.deadletter", p): 0 for p in range(4)} | {
        ("p.products", p): 0 for p in range(4)} | {("p.holds", p): 0 for p in range(4)}
    now[("p.products", 0)] = 1
    assert lost_since(HAD, now) == ("partition end(s) went back: p.deadletter[0] 3 -> 0, "
                                   "p.holds[0] 2 -> 0, p.products[0] 10 -> 1")


def test_a_reason_names_a_few_and_counts_the_rest():
    before = {(f"p.t{n}", 0): 1 for n in range(10)}
    assert lost_since(before, {}) == "topic(s) gone: p.t0, p.t1, p.t2 and 7 more"


def test_after_a_loss_is_healed_the_ends_before_it_are_no_measure():
    records = BrokerRecords()
    records.observe(HAD)
    records.forget()
    assert records.observe({("p.products", 0): 1}) is None  # compared with nothing
    assert records.observe({("p.products", 0): 0}) is not None  # but with this from now on


@pytest.mark.anyio
async def test_the_supervisor_forgets_the_ends_once_it_put_back_what_was_lost():
    """Else the next check would find the same loss again (ends lower than
    those from before it) and owe ``on_back`` once more."""
    async def on_back():
        pass

    sup = BrokerSupervisor("127.0.0.1:9", Metrics(), loss_bound=30.0, answer_timeout=1.0,
                           on_back=on_back)
    sup.broker_records.observe(HAD)
    sup._back_owed = time.monotonic()
    await sup._recover_after_loss()
    assert sup.broker_records.seen is None and sup._back_owed is None


def test_a_topic_one_answer_leaves_out_while_the_others_are_whole_is_not_yet_gone():
    """A broker that errors for one topic (a leader being elected) answers
    its metadata without it, and aiokafka drops a topic answered with an
    error: called lost at once, that was an ERROR line, a count of
    calstream_broker_records_lost_total and a round of putting back, for
    records the broker still had. Back at the next check, nothing was lost."""
    records = BrokerRecords()
    records.observe(HAD)
    without_holds = {k: v for k, v in HAD.items() if k[0] != "p.holds"}
    assert records.observe(without_holds) is None
    assert records.observe(HAD) is None


def test_a_topic_left_out_twice_is_gone_and_one_back_lower_lost_records():
    without_holds = {k: v for k, v in HAD.items() if k[0] != "p.holds"}
    records = BrokerRecords()
    records.observe(HAD)
    assert records.observe(without_holds) is None
    assert records.observe(without_holds) == "topic(s) gone: p.holds"
    records = BrokerRecords()
    records.observe(HAD)
    assert records.observe(without_holds) is None
    assert records.observe({**without_holds, ("p.holds", 0): 0}) == \
        "partition end(s) went back: p.holds[0] 2 -> 0"


def test_a_topic_left_out_with_another_s_end_gone_back_is_a_loss_at_once():
    """A broker started again empty: its ends say so, whatever it left out."""
    records = BrokerRecords()
    records.observe(HAD)
    assert records.observe({("p.products", 0): 0, ("p.products", 1): 0}) is not None
    records = BrokerRecords()
    records.observe(HAD)
    assert records.observe({}) is not None  # every topic gone
