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

from dataclasses import dataclass, field

Ends = dict[tuple[str, int], int]  # (topic, partition) -> its end, as ListOffsets answers

SHOWN = 3  # topics or partitions named in a reason; the rest counted


@dataclass
class BrokerRecords:
    seen: Ends | None = None  # the last check's ends; None: nothing to compare with
    # The ends, from before, of topics the last answer left out while the
    # broker's other topics were there and whole: gone only if the next
    # answer leaves them out too.
    left_out: Ends = field(default_factory=dict)

    def observe(self, ends: Ends) -> str | None:
        """Why the broker lost records since the last check, or None (also
        for the first: nothing to compare with); ``ends`` is what the next
        check is compared with.

        A topic missing from one answer while the others are there, none of
        their partitions gone or their ends back, is not called gone yet:
        a broker that errors for that topic alone (a leader being elected, a
        log directory failing on one node) has its metadata leave it out,
        and aiokafka drops a topic answered with an error from what it
        returns. Called lost at once, that was an ERROR line, a count of
        ``calstream_broker_records_lost_total`` and a round of putting back,
        for records the broker still had. Missing from the next answer too,
        it is gone (one check later); back with an end below the one it
        had, a loss as any."""
        held, self.left_out = self.left_out, {}
        before, self.seen = self.seen, dict(ends)
        if before is None:
            return None
        before = {**held, **before}
        gone = {t for t, _ in before} - {t for t, _ in ends}
        first_time = gone - {t for t, _ in held}
        if first_time and ends:
            rest = {tp: end for tp, end in before.items() if tp[0] not in first_time}
            if lost_since(rest, ends) is None:
                self.left_out = {tp: end for tp, end in before.items() if tp[0] in gone}
                return None
        return lost_since(before, ends)

    def forget(self) -> None:
        """After a loss was healed: what the broker had before it is no
        measure of what it has now."""
        self.seen, self.left_out = None, {}


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
