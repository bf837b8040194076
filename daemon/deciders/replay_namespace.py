"""A namespace is one CRDS context's reprocessing (pure).

A replay writes its products into a namespace's own tree, at the paths the
live tree uses: two replays into one namespace with different contexts (an
operator reusing a name, two people at once, a rerun that forgot its
``--crds-context``) replaced each other's files file by file, and the
namespace promoted as current was a mix of both contexts that nothing
reported. So the first replayed item a stage admits into a namespace fixes
its context (the namespace's context record, doers/namespace_context.py),
and every later one must ask for the same: another is a dead letter naming
the namespace's context and the replay that fixed it, and ``calstream
replay`` refuses one it can tell before it publishes anything.

The context compared is the one the run takes: the replay's
``crds_context``, or, for a replay that names none, the daemon's pinned
context at admission (two such replays across a change of the pinned
context mix contexts as surely). A record on a replay topic is anyone's:
it can fix the context of a namespace nobody has used yet (the operator's
replay is then refused, loudly, naming it), never add a second context to
one.
"""

from __future__ import annotations

from typing import Any

from calstream.daemon.deciders.admission import is_context_name


def context_record(context: str, replay: dict[str, Any], now: str) -> dict[str, Any]:
    """What the namespace's context record says: the context, and which
    replay's item fixed it, when."""
    return {"crds_context": context, "replay_id": str(replay.get("replay_id"))[:64],
            "from": str(replay.get("from"))[:20], "fixed_at": now}


def held_context(record: Any) -> str | None:
    """The context a namespace's record holds, or None if it names none."""
    context = record.get("crds_context") if isinstance(record, dict) else None
    # A context name, or whatever a daemon's pinned one is called (a test's).
    return context if is_context_name(context) or (
        isinstance(context, str) and 0 < len(context) <= 80 and context.isprintable()) else None


def record_from_products(contexts: set[str], namespace: str) -> dict[str, Any] | None:
    """The context record of a namespace made before records were kept
    (session 44), from its products' contexts: one context is its record;
    none, no record yet; several, a namespace already mixed (None is not
    returned for that: the caller tells it by ``mixed_problem``)."""
    if len(contexts) == 1:
        return {"crds_context": next(iter(contexts)), "replay_id": "(its products)",
                "from": "", "fixed_at": ""}
    return None


def mixed_problem(namespace: str, contexts: set[str]) -> str | None:
    """A namespace whose products are already of several contexts."""
    if len(contexts) < 2:
        return None
    return (f"namespace {namespace!r} already holds products of CRDS contexts "
            f"{', '.join(sorted(contexts)[:5])} (made before a namespace kept one context): "
            "replay into a namespace of its own")


def context_problem(namespace: str, asked: str, record: Any) -> str | None:
    """Why a replayed item of context ``asked`` may not run in ``namespace``
    whose context record is ``record`` (None: the namespace has none yet)."""
    if record is None:
        return None
    held = held_context(record)
    if held is None:
        return (f"namespace {namespace!r} has a context record that names no CRDS context "
                f"({str(record)[:120]!r}): remove it only if the namespace's products are "
                "of one context, else replay into a namespace of its own")
    if held == asked:
        return None
    return (f"namespace {namespace!r} is a reprocessing with CRDS context {held} (fixed by "
            f"replay {str(record.get('replay_id'))[:64]} {str(record.get('fixed_at'))[:40]}".rstrip()
            + f"); this replay asks for {asked}: a namespace's products are of one context, "
            "so replay into a namespace of its own")
