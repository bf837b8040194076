"""Work orders decided while the planner catches up (deciders/catch_up_orders.py):
held, dropped when their product turns up in the same read, the rest sent
once caught up, in the order decided; everything else goes at once."""

from __future__ import annotations

from calstream.daemon.deciders.catch_up_orders import WORK_TOPICS, OrdersWhileCatchingUp
from calstream.daemon.deciders.planner_records import Emit
from calstream.topics import contract

from .test_level3_state import T0, cal, dither


def order(n: int, topic: str = "work.stage2", digest: str = "ab") -> Emit:
    body = {"stage": "stage3" if topic.startswith("work.stage3") else "stage2",
            "product_name": f"jw01234001001_02101_{n:05d}_nrcb1", "work_id": "0" * 64,
            "crds_context": None, "inputs": [{"path": f"/p/{n}_rate.fits",
                                              "digest": "sha256:" + digest * 32}]}
    return Emit(topic, body["product_name"], contract.Message("work_order", body))


def product_of(emit: Emit) -> dict:
    """The stage-2 product event the order made: the same name and inputs,
    another work id (the context the run resolved)."""
    event = cal(dither(1), T0).body
    return {**event, "product_name": emit.message["product_name"],
            "inputs": emit.message["inputs"], "work_id": "f" * 64}


def test_orders_are_held_and_the_rest_goes_at_once():
    held = OrdersWhileCatchingUp()
    hold_record = Emit("holds", "x", contract.Message("hold", {"exposure_id": "x"}))
    assert held.hold([order(1), hold_record, order(2, "work.stage3.replay")]) == [hold_record]
    assert len(held) == 2
    assert {"work.stage2", "work.stage3", "work.stage2.replay", "work.stage3.replay"} <= WORK_TOPICS


def test_an_order_whose_product_comes_is_dropped_the_rest_sent_in_order():
    held = OrdersWhileCatchingUp()
    first, second, third = order(1), order(2), order(3)
    held.hold([first])
    held.hold([second, third])
    held.run_over()
    held.product_seen(product_of(second))
    held.run_over()
    assert held.take() == [first, third] and len(held) == 0
    assert held.take() == []


def test_a_product_seen_in_the_same_run_before_its_order_is_acted_on():
    # A run's decisions all come before its sends: the stage-2 product may be
    # decided before the order of the detector1 event ahead of it is held.
    held = OrdersWhileCatchingUp()
    early = order(1)
    held.product_seen(product_of(early))
    assert held.hold([early]) == [] and len(held) == 0
    held.run_over()  # the next run: the same order again is held
    assert held.hold([early]) == [] and held.take() == [early]


def test_another_input_is_another_order_and_an_order_without_inputs_is_not_held():
    held = OrdersWhileCatchingUp()
    redone = order(1, digest="cd")  # a corrected redelivery's rate: a new order
    held.hold([redone])
    held.product_seen(product_of(order(1)))
    assert held.take() == [redone]
    odd = Emit("work.stage2", "k", contract.Message("work_order", {"product_name": "p",
                                                                 "inputs": "not a list"}))
    assert held.hold([odd]) == [odd]


def test_the_exposures_detector1_product_is_not_the_product_of_its_stage2_order():
    # The same name, and (in a synthetic or forged event) the same input digest:
    # only a product of the order's own stage stands for it.
    held = OrdersWhileCatchingUp()
    stage2 = order(1)
    held.product_seen({**product_of(stage2), "stage": "detector1"})
    assert held.hold([stage2]) == [] and held.take() == [stage2]
