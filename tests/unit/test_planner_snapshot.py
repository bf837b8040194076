"""A restored snapshot decides exactly as the full rebuild does.

The recorded stream (tests/unit/planner_stream.py: several programs, holds,
a correction and an operator's release, a late exposure superseding a
mosaic, a redelivery, new content, a plan, ticks) is played whole; then
again cut at every step: the state so far goes through a snapshot (as
JSON text, as on disk) and the rest of the stream is played on the
restored state. Every cut must emit what the whole run emitted after that
point, and end with the same orders, holds and versions.
"""

from __future__ import annotations

import json

import pytest

from calstream.daemon.deciders import planner_snapshot
from calstream.daemon.deciders.event_checks import EventIds

from .planner_stream import SETTINGS, comparable, new_state, play, steps


def _through_snapshot(state):
    ids = EventIds()
    ids.consistent("e" * 64, {"a": 1})
    body = planner_snapshot.take({"live": state}, holds=state.holds, plans={}, event_ids=ids)
    text = json.dumps(body)
    states, holds, plans, event_ids = planner_snapshot.restore(json.loads(text), **SETTINGS)
    assert event_ids.consistent("e" * 64, {"a": 1}) and not event_ids.consistent("e" * 64, {})
    assert holds == state.holds
    return states["live"]


def _final(state):
    holds = {k: {f: v for f, v in h.items() if f != "emitted_at"} for k, h in state.holds.items()}
    return (sorted(state.ordered), json.dumps(holds, sort_keys=True),
            sorted((c.label, [(s.version, s.work_id) for s in c.sent])
                   for c in state.stage3.candidates.values()),
            json.dumps(state.summary(1e10), sort_keys=True, default=str))


def test_every_cut_of_the_stream_restores_to_the_same_decisions():
    stream = steps()
    whole = new_state()
    per_step = [play(whole, [step]) for step in stream]
    assert sum(len(e) for e in per_step) > 10
    for cut in range(len(stream) + 1):
        first = new_state()
        play(first, stream[:cut])
        restored = _through_snapshot(first)
        rest = play(restored, stream[cut:])
        expected = [e for emits in per_step[cut:] for e in emits]
        assert comparable(rest) == comparable(expected), f"cut at step {cut}"
        assert _final(restored) == _final(whole), f"cut at step {cut}"


@pytest.mark.parametrize("body", [None, [], {}, {"format": 99}, {"format": 1},
                                  {"format": 1, "routes": [], "holds": {}, "plans": [],
                                   "event_ids": [], "namespaces": {"live": {"headers": 5}}}])
def test_a_snapshot_that_cannot_be_read_is_refused_whole(body):
    with pytest.raises(planner_snapshot.SnapshotInvalid):
        planner_snapshot.restore(body, **SETTINGS)
