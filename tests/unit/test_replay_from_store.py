"""What a replay takes from the product store where its topic lacks it
(deciders/replay_from_store.py): the arrival a detector1 record holds, for
exposures the topic has no arrival of; the later stages' lost orders named."""

from __future__ import annotations

import copy
import datetime as dt

from calstream.daemon.deciders.replay_from_store import (
    STORE,
    arrival_of,
    arrivals_from_store,
    lost_orders,
)
from calstream.daemon.deciders.replay_selection import Selection, replayed_message
from calstream.steps.provenance import made_from
from calstream.topics import contract

from .test_level3_state import T0, cal, dither, rate


def detector1(n: int, at: float = T0) -> dict:
    """A detector1 product event as a stage consumer writes it: its one input the uncal file."""
    event = rate(dither(n), at).body
    name = event["exposure_id"]
    event["inputs"] = [{"path": f"/inbox/{name}_uncal.fits", "digest": "sha256:" + "ab" * 32,
                        "size": 282240, "role": "uncal"}]
    return event


def test_the_arrival_is_what_the_record_holds():
    event = detector1(1)
    body = arrival_of(event)
    assert contract.is_valid("arrival", body)
    uncal = event["inputs"][0]
    assert (body["exposure_id"], body["path"], body["digest"], body["size"]) == (
        event["exposure_id"], uncal["path"], uncal["digest"], uncal["size"])
    assert body["header"] == event["header"] and body["detected_at"] == event["arrived_at"]
    assert arrival_of(detector1(1))["event_id"] == body["event_id"]  # the same each time
    # calwebb_dark and calwebb_guider run on the uncal file too: their arrivals count.
    for stage in ("dark", "guider"):
        assert arrival_of({**event, "stage": stage}) == body


def test_only_live_detector1_records_that_say_enough_make_one():
    good = detector1(1)
    assert arrival_of(cal(dither(1), T0).body) is None  # a stage-2 product
    for spoil in (lambda e: e.update(namespace="reprocessed"),
                  lambda e: e.update(replay={"replay_id": "0" * 16, "namespace": "n"}),
                  lambda e: e.update(inputs=[]),
                  lambda e: e.update(inputs=[*e["inputs"], e["inputs"][0]]),
                  lambda e: e["inputs"][0].update(role="rate"),
                  lambda e: e["inputs"][0].pop("size"),
                  lambda e: e["inputs"][0].update(digest="not a digest"),
                  lambda e: e.update(header="not a header"),
                  lambda e: e.update(arrived_at=None)):
        event = copy.deepcopy(good)
        spoil(event)
        assert arrival_of(event) is None, event
    assert arrival_of("not an event") is None


def test_the_store_fills_in_what_the_topic_lacks_and_counts_what_it_cannot():
    on_topic, lost, broken = detector1(1), detector1(2, T0 + 60), detector1(3)
    broken["inputs"] = []
    made, unusable = arrivals_from_store(
        [on_topic, lost, broken, cal(dither(4), T0).body, "garbage"],
        on_topic={on_topic["exposure_id"]})
    assert [c.message["exposure_id"] for c in made] == [lost["exposure_id"]]
    assert unusable == 1  # the broken detector1 record; the others are no candidates at all
    (c,) = made
    assert c.origin == STORE
    assert c.timestamp_ms == int(contract.parse_time(lost["arrived_at"]).timestamp() * 1000)
    request = {"replay_id": "0123456789abcdef", "namespace": "again", "crds_context": None,
               "from": "raw", "requested_at": contract.utc_now(), "selection": {}}
    key, message = replayed_message(c, source="raw", topic="raw", request=request)
    assert key == lost["exposure_id"] and contract.is_valid("arrival", message.body)
    assert message["replay"]["source"] == {"origin": STORE}


def test_later_stages_name_the_products_whose_order_is_gone():
    kept, gone = cal(dither(1), T0).body, cal(dither(2), T0 + 3600).body
    # The order of ``kept`` as the topic has it: the daemon's context left
    # open, so another work id than its product's; its name and inputs agree.
    order = {**kept, "work_id": "0" * 64, "crds_context": None}
    on_topic = {made_from(order)}
    events = [kept, gone, detector1(3), {"stage": "stage2"}, "garbage"]
    assert lost_orders(events, "stage2", on_topic, Selection()) == [gone["exposure_id"]]
    late = Selection(since=dt.datetime.fromtimestamp(T0 + 60, dt.UTC))
    assert lost_orders(events, "stage2", on_topic, late) == [gone["exposure_id"]]
    early = Selection(until=dt.datetime.fromtimestamp(T0 + 60, dt.UTC))
    assert lost_orders(events, "stage2", on_topic, early) == []
    # Another input (a corrected redelivery's rate): not the order of this product.
    redone = {**kept, "inputs": [{"path": "/p/x_rate.fits", "digest": "sha256:" + "cd" * 32}]}
    assert lost_orders([redone], "stage2", on_topic, Selection()) == [kept["exposure_id"]]
    assert made_from({"inputs": []}) is None and made_from("garbage") is None
