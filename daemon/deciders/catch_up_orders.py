"""Work orders a planner decides while it catches up: held until it has, and
dropped when the product they would make turns up meanwhile (pure).

A planner that rebuilds from the products topic (no usable snapshot: the
first start, a broker started again empty, every start of the embedded
default without one) reads each exposure's detector1 event before its
stage-2 product, so its state decides the stage-2 order again, and it used
to go out at once: the whole history ordered again, each order found done by
its stage (``duplicate``), the stage-2 consumers busy with it while new
work waited (a throwaway script with four exposures: four orders; the
rebuild in tests/integration/test_recovery.py sent two or three of three).
Held instead, an order whose product (the same stage, name and inputs,
steps/provenance.made_from) comes later in the same read is dropped: that
product says the order was carried out. What is left is sent the moment
the planner has caught up, before anything else it decides.

Why holding is safe: a snapshot is taken only once caught up (doers/
planner_restore.py), after these orders are sent and acknowledged, so no
snapshot covers a record whose order was not sent; a planner stopped while
catching up rebuilds and decides them again.

Memory: the orders whose product has not come yet (usually a fetch or two),
and the products seen in the current run of records (``run_over``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from calstream.daemon.deciders.planner_records import Emit
from calstream.daemon.stages import work_order_stages
from calstream.steps.provenance import made_from

# The logical topics of work orders, live and replay.
WORK_TOPICS = frozenset(t for st in work_order_stages() for t in (st.live_topic, st.replay_topic))


class OrdersWhileCatchingUp:
    def __init__(self) -> None:
        self._held: dict[tuple, list[tuple[int, Emit]]] = {}  # by made_from: (when, order)
        self._seen_in_run: set[tuple] = set()  # products of the run not yet acted on
        self._decided = 0  # orders held so far: their sequence

    def __len__(self) -> int:
        return sum(len(emits) for emits in self._held.values())

    def hold(self, emits: Iterable[Emit]) -> list[Emit]:
        """``emits`` less the work orders, which are held (or dropped: their
        product was seen in this run); what is left is sent now."""
        now = []
        for e in emits:
            if e.topic not in WORK_TOPICS:
                now.append(e)
                continue
            key = made_from(e.message.body)
            if key is None:  # nothing to match it by: not held back
                now.append(e)
            elif key not in self._seen_in_run:
                self._decided += 1
                self._held.setdefault(key, []).append((self._decided, e))
        return now

    def product_seen(self, event: Mapping[str, Any]) -> None:
        """A product event read while catching up: the orders held for it
        are dropped, and one decided in the same run is never held."""
        key = made_from(event)
        if key is not None:
            self._held.pop(key, None)
            self._seen_in_run.add(key)

    def run_over(self) -> None:
        """The run of records whose decisions ``product_seen`` may precede is acted on."""
        self._seen_in_run.clear()

    def take(self) -> list[Emit]:
        """Every order still held, in the order decided; none held after."""
        held = [e for _, e in sorted((x for emits in self._held.values() for x in emits),
                                     key=lambda x: x[0])]
        self._held.clear()
        self._seen_in_run.clear()
        return held
