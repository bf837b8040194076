"""What the planner knows about an exposure or a level-3 product.

Records hold paths, never pixels: the planner builds associations from
product events, and a record is what one such event (plus the arrival's
header) says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from calstream.steps.naming import ExposureName, parse_exposure_name
from calstream.steps.routing import HeaderView, Route, RoutingError, route


class _Record:
    """What every record has: a header (``header``), read through a HeaderView."""

    header: Mapping[str, Any]

    @cached_property
    def keywords(self) -> HeaderView:
        return HeaderView(self.header)


@dataclass(frozen=True)
class Exposure(_Record):
    """One exposure: its id, its arrival header, its stage-1 products by suffix
    ({"rate": path, "rateints": path}); a product absent here does not exist yet."""

    exposure_id: str
    header: Mapping[str, Any] = field(repr=False)
    products: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def name(self) -> ExposureName:
        return parse_exposure_name(self.exposure_id)

    @cached_property
    def route(self) -> Route | None:
        """Its own route; None when it has none (it can then be nobody's companion)."""
        try:
            return route(self.header)
        except RoutingError:
            return None


@dataclass(frozen=True)
class Level3Product(_Record):
    """A stage-3 product, such as a WFSS direct image's image3 output.

    ``header`` is a member exposure's header (program, observation, target,
    optical path); ``products`` maps suffix to path: {"i2d": ..., "cat": ...,
    "segm": ...}.
    """

    name: str
    header: Mapping[str, Any] = field(repr=False)
    products: Mapping[str, str] = field(default_factory=dict)


def program_of(record: Exposure | Level3Product) -> str:
    if isinstance(record, Exposure):
        return record.name.program
    return _digits(record.keywords, "PROGRAM", 5)


def observation_of(record: Exposure | Level3Product) -> str:
    if isinstance(record, Exposure):
        return record.name.observation
    return _digits(record.keywords, "OBSERVTN", 3)


def _digits(h: HeaderView, key: str, width: int) -> str:
    # Some writers store PROGRAM or OBSERVTN as integers, losing leading zeros.
    text = h.text(key)
    return text.zfill(width) if text.isdigit() else text
