"""A restored snapshot's per-exposure records, built when first read (pure).

deciders/planner_snapshot.py restores the exposures' detector1 records
(Seen), their level-3 arrivals (Arrived) and stage-2 records (Calibrated)
as ``lazy_records.Parts``; the builders here make the record the decider
would have made when the event came (the same objects from the same event:
decisions read no difference). The parts are, in order, what the snapshot
keeps of each:

* Seen: (event, since, release, route)
* Arrived: (header, products, since, provisional)
* Calibrated: (event, since)

What a builder will read is checked at restore (``checked_event``): a
snapshot that cannot be built is refused whole then, never found out by a
decision later.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from calstream.daemon.deciders.lazy_records import Parts
from calstream.daemon.deciders.level3_candidates import Arrived, Calibrated
from calstream.daemon.deciders.planner_records import Seen, routed_exposure
from calstream.steps.associations import Exposure

STAGE2_SUFFIXES = ("cal", "calints", "x1d", "x1dints")  # as Level3State._stage2_digests


def checked_event(ev: Any) -> Any:
    """``ev`` if its record can be built from it, else ValueError."""
    if type(ev) is not dict or type(ev.get("outputs")) is not list or "header" not in ev \
            or type(ev.get("inputs")) is not list:
        raise ValueError("a product event without outputs, inputs or header")
    for o in ev["outputs"]:
        if type(o) is not dict or "path" not in o or "suffix" not in o:
            raise ValueError("a product event's output without path or suffix")
    return ev


def seen(eid: str, parts: Parts) -> Seen:
    ev, since, release, route = parts
    outputs = ev["outputs"]
    return Seen(routed_exposure(eid, ev["header"], {o["suffix"]: o["path"] for o in outputs},
                                route), {o["path"]: o for o in outputs}, ev, since, release)


def calibrated(eid: str, parts: Parts) -> Calibrated:
    ev, since = parts
    outputs = ev["outputs"]
    return Calibrated(Exposure(eid, ev["header"], {o["suffix"]: o["path"] for o in outputs}),
                      {o["path"]: o for o in outputs}, ev, since)


def arrived(exposures: MutableMapping) -> Callable[[str, Parts], Arrived]:
    """The builder of arrivals that share their Exposure with the detector1
    record when it is the same (one object, as when it arrived)."""
    def build(eid: str, parts: Parts) -> Arrived:
        header, products, since, provisional = parts
        record = exposures.get(eid)
        if record is not None and record.exposure.header is header and \
                record.exposure.products == products:
            return Arrived(record.exposure, since, provisional)
        return Arrived(Exposure(eid, header, products), since, provisional)
    return build


def provisional(row: Arrived | Parts) -> bool:
    return row[3] if type(row) is Parts else row.provisional


def stage2_digests(row: Calibrated | Parts) -> list[str]:
    """Level3State._stage2_digests, from the record or its parts."""
    outputs = {o["path"]: o for o in row[0]["outputs"]} if type(row) is Parts else row.outputs
    return [o["digest"] for o in outputs.values() if o["suffix"] in STAGE2_SUFFIXES]
