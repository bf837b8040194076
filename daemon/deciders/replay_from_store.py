"""What a replay takes from the product store where its source topic lacks it: pure.

The broker is the transport, the product store the ledger. An embedded
broker started again empty (its topics are in memory), a Kafka topic
recreated, or retention leave ``raw`` without the arrivals of exposures
calibrated long ago, and a replay ``--from raw`` then covered, without a
word, only the few the watcher announced again. Each live provenance
record of a stage made from an uncal file (detector1; dark and guider)
holds what its arrival said: the uncal file's path, digest
and size (its one input), the header read at the door and when it arrived.
So the arrival is made again from it, for every exposure the topic has no
live arrival of; the admission reads the file and judges it as it judges
any arrival (the file's own headers decide, a file gone or changed is a
dead letter).

A stage-2 or stage-3 work order is not made again: its association and
members are the planner's decision at the time. The live products of those
stages whose work order the topic lacks are counted instead, and the
replay reports them as a gap (``lost_orders``), loud, as one reaching past
retention is.

A provenance record is untrusted like any file: one that makes no valid
arrival is left out and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from calstream.daemon.deciders.replay_selection import Candidate, Chooser, Selection, facts_of
from calstream.daemon.deciders.replay_sieve import packed
from calstream.daemon.stages import arrival_product_stages
from calstream.steps.provenance import made_from
from calstream.topics import contract

STORE = "product store"  # a Candidate's origin when it was made from the store
ARRIVAL_STAGES = frozenset(arrival_product_stages())  # detector1, dark, guider


def _live(event: dict[str, Any]) -> bool:
    return (event.get("namespace") or "live") == "live" and not event.get("replay")


def arrival_of(event: Any) -> dict[str, Any] | None:
    """The arrival (a valid message body) a live product event of an
    arrival stage was made from, or None: no such event, or one that says
    too little."""
    if not isinstance(event, dict) or event.get("stage") not in ARRIVAL_STAGES \
            or not _live(event):
        return None
    inputs = event.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict) \
            or inputs[0].get("role") != "uncal":
        return None
    uncal, exposure, arrived = inputs[0], event.get("exposure_id"), event.get("arrived_at")
    body = {"schema": "calstream.arrival", "schema_version": contract.SCHEMA_VERSION,
            "event_id": contract.event_id("arrival", str(exposure), str(uncal.get("digest")),
                                          STORE),
            "emitted_at": arrived, "exposure_id": exposure, "path": uncal.get("path"),
            "digest": uncal.get("digest"), "size": uncal.get("size"), "detected_at": arrived,
            "source": "watch", "header": event.get("header")}
    return body if contract.is_valid("arrival", body) else None


def arrivals_from_store(events: Iterable[Any], on_topic: set[str]
                        ) -> tuple[list[Candidate], int]:
    """(Candidates made from the live product events of arrival stages, of
    exposures not in ``on_topic``, the names of the live arrivals the topic
    has; how many such events made no arrival and were left out)."""
    made, left_out = [], 0
    for event in events:
        if not isinstance(event, dict) or event.get("stage") not in ARRIVAL_STAGES \
                or not _live(event) or event.get("exposure_id") in on_topic:
            continue
        body = arrival_of(event)
        if body is None:
            left_out += 1
            continue
        when = contract.parse_time(body["detected_at"]).timestamp()
        made.append(Candidate(-1, -1, int(when * 1000), body, origin=STORE))
    return made, left_out


def store_arrivals(events: Iterable[Any], on_topic: set[str], selection: Selection,
                   chosen: dict[str, Candidate] | None = None,
                   prefer: Callable[[Candidate, Candidate], bool | None] | None = None
                   ) -> tuple[list[Candidate], int]:
    """``arrivals_from_store`` in one pass over ``events`` (read one at a
    time: a mission's records, held, were some 8 KB each), keeping only
    what the selection takes (the latest per exposure, as ``select``); and
    with ``prefer`` (the file: replay_sieve.file_decides), in place of an
    arrival ``chosen`` holds from the topic, the record's that the file puts
    before it, which is removed from ``chosen``. A topic that lost an
    exposure's real arrival (a broker started again empty) and holds a
    forged one (anyone may write it) had the record's left out, and the
    forged one replayed, for detector1 to refuse."""
    chosen = chosen if chosen is not None else {}
    lacking, denied = Chooser(selection, keep=packed), Chooser(selection)
    left_out = 0
    for event in events:
        if not isinstance(event, dict) or event.get("stage") not in ARRIVAL_STAGES \
                or not _live(event):
            continue
        name = event.get("exposure_id")
        if name in on_topic and (prefer is None or name not in chosen):
            continue
        body = arrival_of(event)
        if body is None:
            left_out += name not in on_topic
            continue
        when = contract.parse_time(body["detected_at"]).timestamp()
        (denied if name in on_topic else lacking).offer(
            Candidate(-1, -1, int(when * 1000), body, origin=STORE))
    made = lacking.result()[0]
    for c in denied.result()[0]:
        name = c.message["exposure_id"]
        if prefer is not None and prefer(chosen[name], c):
            del chosen[name]
            made.append(c)
    return made, left_out


def lost_orders(events: Iterable[Any], stage: str, on_topic: set,
                selection: Selection) -> list[str]:
    """The product names of live ``stage`` products the selection takes
    whose work order is not among ``on_topic`` (``made_from`` of each order
    the topic has: steps/provenance.py): what a replay ``--from stage`` cannot cover, sorted."""
    lost = set()
    for event in events:
        if not isinstance(event, dict) or event.get("stage") != stage or not _live(event) \
                or made_from(event) in on_topic:
            continue
        try:
            name, facts, when = facts_of(event)
        except (KeyError, TypeError, ValueError):  # a record no selection can judge
            continue
        if selection.matches(facts, when):
            lost.add(str(name))
    return sorted(lost)
