"""Whether an external broker lost its records while it kept answering.

The supervisor's probe (doers/broker_probe.py) sees a broker that stops
answering. A broker started again between two probes (a tansu with memory
storage restarted within a second, a Kafka node on a fresh volume behind a
load balancer) fails none, and answers without the topics and records it
had. What it answers about its partitions gives it away: the end of a
partition, as ListOffsets gives it, never goes back on a broker that keeps
its records (retention moves a partition's beginning, never its end; on
tansu the answer is the first offset of the last batch + 1, lower than the
true end but just as monotonic), and a topic, once there, stays. So a
topic or partition gone, or an end lower than the one seen before, is a
loss. Its cluster id is no sign: tansu answers "tansu_cluster" after every
start, and a Kafka node formatted again keeps its deployment's id.

Pure: the supervisor feeds it what each check saw and acts on the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

Ends = dict[tuple[str, int], int]  # (topic, partition) -> its end, as ListOffsets answers

SHOWN = 3  # topics or partitions named in a reason; the rest counted


@dataclass
class BrokerRecords:
    seen: Ends | None = None  # the last check's ends; None: nothing to compare with

    def observe(self, ends: Ends) -> str | None:
        """Why the broker lost records since the last check, or None (also
        for the first: nothing to compare with); ``ends`` is what the next
        check is compared with."""
        before, self.seen = self.seen, dict(ends)
        return None if before is None else lost_since(before, ends)

    def forget(self) -> None:
        """After a loss was healed: what the broker had before it is no
        measure of what it has now."""
        self.seen = None


def lost_since(before: Ends, now: Ends) -> str | None:
    """Why ``now`` shows a broker that lost records it had in ``before``, or None."""
    topics = sorted({t for t, _ in before} - {t for t, _ in now})
    if topics:
        return f"topic(s) gone: {_named(topics)}"
    partitions = sorted(tp for tp in before if tp not in now)
    if partitions:
        return f"partition(s) gone: {_named([f'{t}[{p}]' for t, p in partitions])}"
    back = sorted(tp for tp, end in before.items() if now[tp] < end)
    if back:
        return "partition end(s) went back: " + _named(
            [f"{t}[{p}] {before[(t, p)]} -> {now[(t, p)]}" for t, p in back])
    return None


def _named(items: list[str]) -> str:
    more = len(items) - SHOWN
    return ", ".join(items[:SHOWN]) + (f" and {more} more" if more > 0 else "")
