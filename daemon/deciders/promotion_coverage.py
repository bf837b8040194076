"""What the live products have that a namespace about to be promoted lacks (pure).

Promotion swaps ``<products>/current`` to the namespace's own tree: a reader
then finds there only what the replay made. A partial replay (one
``--exposure``, a ``--since`` that cuts a visit, ``--from stage2`` without
the detector1 products) promoted that way made every product it did not
cover vanish from the products of record, and ``calstream promote`` said
nothing about it. The comparison is made on the provenance records of both
trees (the commit markers: a file no record lists is no product), keyed by
what a product is, its stage, program, observation and name; versions of
one product are one product. A namespace's record whose files are no
longer the ones it lists (changed, replaced or gone since it was made) is
no product by the readers' rule (docs/contract.md): the caller hashes them
and passes such records as ``damaged``, counted as absent and named.

A record is untrusted like any file: its fields are read as text, whatever
they hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SHOWN = 5  # names listed per kind: enough to recognise, short enough to read at 3 a.m.


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)[:200]


def _event(record: Any) -> dict[str, Any]:
    event = record.get("event") if isinstance(record, dict) else None
    return event if isinstance(event, dict) else {}


def _products(records: Iterable[Any]) -> dict[tuple[str, str, str, str], str]:
    """(stage, program, observation, product name) -> product name."""
    out = {}
    for record in records:
        event = _event(record)
        name = event.get("product_name")
        if name is None:
            continue
        key = tuple(_text(event.get(k)) for k in ("stage", "program", "observation"))
        out[(*key, _text(name))] = _text(name)
    return out


def _exposures(records: Iterable[Any]) -> set[str]:
    return {_text(e["exposure_id"]) for r in records
            if (e := _event(r)).get("exposure_id") is not None}


@dataclass(frozen=True)
class CoverageGap:
    """What live has and the namespace has not: exposures, and products by stage."""

    exposures: tuple[str, ...]          # sorted
    products: dict[str, tuple[str, ...]]  # stage -> sorted product names
    live_exposures: int
    live_products: int
    damaged: tuple[str, ...] = ()  # the namespace's products whose files are not as recorded
    damage: str | None = None  # why, for the first of them

    def __bool__(self) -> bool:
        return bool(self.exposures or self.products or self.damaged)

    def lines(self, namespace: str) -> list[str]:
        """The operator's account: counts, and the first few names of each."""
        out = []
        if self.damaged:
            out.append(f"{len(self.damaged)} product(s) of {namespace} are not the files their "
                       f"records list (changed, replaced or gone since): {_some(self.damaged)} "
                       f"({self.damage})")
        if self.exposures:
            out.append(f"{len(self.exposures)} of live's {self.live_exposures} exposure(s) "
                       f"have no product in {namespace}: {_some(self.exposures)}")
        missing = sum(len(names) for names in self.products.values())
        if missing:
            out.append(f"{missing} of live's {self.live_products} product(s) are not in "
                       f"{namespace}:")
            out += [f"  {stage}: {len(names)}: {_some(names)}"
                    for stage, names in sorted(self.products.items())]
        return out


def _some(names: tuple[str, ...]) -> str:
    more = len(names) - SHOWN
    return ", ".join(names[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def coverage_gap(live: Iterable[Any], namespace: Iterable[Any],
                 damaged: Iterable[tuple[Any, str]] = ()) -> CoverageGap:
    """Compare the provenance records of the live tree with a namespace's
    (those whose files are intact; ``damaged``: (record, why) of the others)."""
    live, namespace, damaged = list(live), list(namespace), list(damaged)
    live_products, ns_products = _products(live), _products(namespace)
    by_stage: dict[str, list[str]] = {}
    for key in live_products.keys() - ns_products.keys():
        by_stage.setdefault(key[0], []).append(live_products[key])
    live_exposures = _exposures(live)
    return CoverageGap(
        exposures=tuple(sorted(live_exposures - _exposures(namespace))),
        products={stage: tuple(sorted(names)) for stage, names in by_stage.items()},
        live_exposures=len(live_exposures), live_products=len(live_products),
        damaged=tuple(sorted(set(_products([r for r, _ in damaged]).values()))),
        damage=damaged[0][1][:300] if damaged else None)
