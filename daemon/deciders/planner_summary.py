"""A planner state's summary, for its gauges and the /planner view: built
once a second each (doers/planner_status.py), so it builds only what they
show (session 46).

A stuck state (a program's pointing PLANNED and never corrected: thousands
of held exposures, each a stage-2 association waiting for it) cost the
planner's loop 50-85 ms a second at 10,000 of each (now about 14): each
summary, twice a second, made a dict of every waiting association's
reasons in their order (which the gauges never read and the view cut to
100 by name) and parsed the time of every hold afresh (more holds than
topics/times.py remembers texts). The gauges now ask ``limit=0`` (the
counts), the view ``VIEW_LIMIT``; bench/README.md "Session 46" (h61) has
the figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from calstream.daemon.deciders.direct_image_holds import held_by_kind
from calstream.topics import contract

if TYPE_CHECKING:
    from calstream.daemon.deciders.planner_state import PlannerState


def summary(state: PlannerState, now: float, limit: int | None = None) -> dict[str, Any]:
    """The counts, and of each list the first ``limit`` as status lists
    them (None: all of it, in the candidates' own order, for tests and
    readers of the whole state)."""
    opened = state.open_candidates
    listed = opened.waiting() if limit is None else opened.waiting_by_science(limit)
    held, for_direct_image, oldest, unreadable = _holds(state.holds)
    return {"waiting": opened.waiting_count(), "level3": state.stage3.summary(now, limit),
            "waiting_for": {c.science: dict(c.waiting_for) for c in listed},
            "held": held, "held_for_direct_image": for_direct_image,
            "oldest_hold_age": (now - oldest) if oldest is not None else 0.0,
            "hold_times_unreadable": unreadable, "degraded": opened.degraded_count()}


def _holds(holds: dict[str, dict[str, Any]]
           ) -> tuple[int, int, float | None, list[str]]:
    """(pointing holds, WFSS grisms held for their direct image, the oldest
    pointing hold's time, the exposures of those whose time cannot be read).

    Every way a hold comes in checks its record against the hold schema,
    whose "date-time" is read by parse_time itself (contract.py), so the
    last list is empty; one that is not (a way in that forgets the check)
    still counts as held and is left out of the oldest time: before, one
    such hold made every summary raise, and every gauge and /planner kept
    its last value while the planner went on (session 46)."""
    pointing, for_direct_image = held_by_kind(holds)
    texts = [hold["since"] for hold in pointing]
    times = list(map(_SINCE.get, texts))  # each parsed once (_since)
    unreadable = []
    if None in times:
        times = [_since(text) if t is None else t
                 for text, t in zip(texts, times, strict=True)]
        if None in times:  # rare: only then is a hold looked at one by one
            unreadable = [h.get("exposure_id") for h, t in zip(pointing, times, strict=True)
                          if t is None]
            times = [t for t in times if t is not None]
    _forget_beyond(len(texts))
    return len(texts), len(for_direct_image), min(times, default=None), unreadable


def _since(text: Any) -> float | None:
    """A hold's time, parsed once while it is held (``_SINCE``: parse_time
    remembers only a few thousand texts, and more holds than that were
    parsed anew each second); None if parse_time cannot read it."""
    try:
        known = contract.parse_time(text).timestamp()
    except (ValueError, TypeError, AttributeError, OverflowError):
        return None
    if type(text) is str:
        _SINCE[text] = known
    return known


def _forget_beyond(held: int) -> None:
    """Bounded by the holds there are: texts of holds released are
    forgotten once they outnumber them."""
    if len(_SINCE) > 2 * held + _SINCE_SPARE:
        _SINCE.clear()


_SINCE: dict[str, float] = {}  # a hold's "since" text -> its time
_SINCE_SPARE = 1024
