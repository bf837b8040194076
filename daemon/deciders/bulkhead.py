"""One candidate's unexpected failure stops that candidate, not the planner.

The planner decides many candidates at once: every level-2 and level-3
candidate on each tick, every candidate an exposure may complete on each
event. The intake refuses what it knows to be impossible
(deciders/event_checks.py), but a decision that still raises on one
candidate's data would otherwise raise out of the whole tick, every second,
so that no candidate after it were ever decided again; or out of another
exposure's event, which would then be dead-lettered for a fault not its own.
Here each candidate is decided on its own: a failure is kept on the
candidate (status shows it), logged once per reason, and the others go on.
A data fault is not retried by this: the candidate is decided again only
when something about it changes or time passes, as any waiting candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from calstream.steps.failures import error_text

log = logging.getLogger("calstream.planner")

C = TypeVar("C")


def decide_each(candidates: Iterable[C], decide: Callable[[C], list]) -> list:
    """``decide(c)`` of every candidate, concatenated; a candidate whose
    decision raises adds nothing, and ``c.failed(reason)`` keeps the reason
    on it and says whether it is a new one (logged only then);
    ``c.decided()`` after a decision that went through."""
    out: list = []
    for cand in candidates:
        try:
            out += decide(cand)
        except Exception as exc:  # noqa: BLE001 - the bulkhead: see the module's docstring
            reason = f"cannot be decided: {error_text(exc)}"[:500]
            if cand.failed(reason):
                log.error("planner: %r %s", getattr(cand, "science", None)
                          or getattr(cand, "key", cand), reason, exc_info=exc)
        else:
            cand.decided()  # a reason kept from before no longer holds
    return out
