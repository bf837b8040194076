"""What a planner snapshot keeps once and refers to by number, and back (pure).

Exposure ids and routes repeat in every table of a snapshot's body
(deciders/planner_snapshot.py): each is kept once, in a table, and named by
its number elsewhere; a route's "also" is a number too, taken after it.
Kept apart from the capture, encoding and restore, which only use these
numberings; level-3 keys travel as the list of their fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from calstream.daemon.deciders.snapshot_blocks import SnapshotInvalid
from calstream.steps.associations import Level3Key
from calstream.steps.routing import Route


class Numbers:
    """Things kept once each, referred to by number (exposure ids, routes)."""

    def __init__(self, body: Any = None) -> None:
        self.table: list = []
        self._numbers: dict = {}
        self._body = body or _itself  # (thing, these numbers) -> what the table keeps

    def __call__(self, thing) -> int:
        n = self._numbers.get(thing)
        if n is None:
            n = self._numbers[thing] = len(self.table)
            self.table.append(None)  # taken before the body: a route's "also" comes after
            self.table[n] = self._body(thing, self)
        return n

    def many(self, things: Any) -> list[int]:
        """``[self(t) for t in things]`` at C speed, but for a body's call per
        new thing (millions of exposure ids per snapshot)."""
        things = things if type(things) is list else list(things)
        numbers = list(map(self._numbers.get, things))
        if None in numbers:
            if self._body is not _itself:
                return [self(t) for t in things]
            known = self._numbers
            new = [t for t in dict.fromkeys(things) if t not in known]
            known.update(zip(new, range(len(self.table), len(self.table) + len(new)), strict=True))
            self.table += new
            numbers = list(map(known.__getitem__, things))
        return numbers


def _itself(thing: Any, numbers: Numbers) -> Any:
    return thing


def route_body(r: Route, routes: Numbers) -> dict:
    body = dataclasses.asdict(r)
    body["also"] = routes(r.also) if r.also else None
    return body


def route_table(table: list[dict]) -> list[Route]:
    """Routes by number; a route's "also" is numbered after it (taken first)."""
    bodies = list(table)
    routes: dict[int, Route] = {}

    def build(n: int) -> Route:
        if n not in routes:
            body = bodies[n]
            if body["also"] is not None and body["also"] <= n:
                raise SnapshotInvalid("a route refers to itself or an earlier one")
            also = build(body["also"]) if body["also"] is not None else None
            routes[n] = Route(**{**body, "needs": tuple(body["needs"]), "also": also})
        return routes[n]

    return [build(n) for n in range(len(bodies))]


def key_fields(key: Level3Key) -> list:
    """A level-3 key as the body keeps it: its fields' values, in order."""
    return [getattr(key, f.name) for f in dataclasses.fields(key)]


def tuples(value: Any) -> Any:
    """Lists (as JSON gives them back) as the tuples a key was made of."""
    return tuple(tuples(v) for v in value) if isinstance(value, list) else value
