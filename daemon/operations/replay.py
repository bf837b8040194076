"""`calstream replay`: reprocess a selection into a namespace, at low priority.

A replay reads a source topic from its oldest retained record up to "now"
(the high watermarks of fetch responses: end_offsets and offsets_for_times
are wrong on tansu), selects messages by arrival time and by what they are,
and republishes them where the workers read them at low priority:

* ``--from raw``: the arrivals of ``raw`` -> ``replay`` (detector1, then the
  later stages through the planner);
* ``--from stage2`` / ``--from stage3``: the live work orders of
  ``work.stage2`` / ``work.stage3`` -> ``work.stage2.replay`` /
  ``work.stage3.replay``, i.e. a later stage re-run from the existing
  earlier-stage live products.

Every republished message carries a ``replay`` object (replay id, namespace,
CRDS context, selection, the source record), which the products carry on.

Retention bounds a replay. If a partition has lost records to retention
(its first retained offset is above 0) and the requested range starts before
its first retained record, the replay would silently start later than asked:
that is reported as a gap, loudly, and nothing is published unless the
operator says ``--allow-gap``.

The selection and coverage logic is pure (no broker): see the unit tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.doers import kafka
from calstream.daemon.doers.product_store import BadNamespace, ProductStore, check_namespace
from calstream.daemon.operations.config import Config, ConfigError
from calstream.daemon.stages import STAGES
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.steps.provenance import work_id
from calstream.topics import contract
from calstream.topics.catalog import Topics

# --from NAME -> (source topic, target topic, message type): a stage's live
# topic into its replay topic (daemon/stages.py).
SOURCES = {st.replay_from: (st.live_topic, st.replay_topic, st.message) for st in STAGES}
EXIT_GAP = 3


# -- selection (pure) ------------------------------------------------------

def parse_when(text: str | None) -> dt.datetime | None:
    """RFC 3339, or a date (midnight UTC); a time without a zone is UTC."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is not a time (use e.g. 2026-11-24T06:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@dataclass
class Selection:
    since: dt.datetime | None = None  # arrival time, inclusive
    until: dt.datetime | None = None  # exclusive
    programs: set[str] = field(default_factory=set)
    observations: set[str] = field(default_factory=set)
    visits: set[str] = field(default_factory=set)
    exposures: set[str] = field(default_factory=set)
    instruments: set[str] = field(default_factory=set)
    exp_types: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.instruments = {i.upper() for i in self.instruments}
        self.exp_types = {e.upper() for e in self.exp_types}
        if self.since and self.until and self.until <= self.since:
            raise ConfigError("--until must be later than --since")

    def matches(self, facts: dict[str, Any], when: dt.datetime | None) -> bool:
        if self.since and (when is None or when < self.since):
            return False
        if self.until and (when is None or when >= self.until):
            return False
        checks = ((self.programs, "program"), (self.observations, "observation"),
                  (self.visits, "visit"), (self.exposures, "exposure_id"),
                  (self.instruments, "instrument"), (self.exp_types, "exp_type"))
        for wanted, key in checks:
            value = facts.get(key)
            if wanted and (value is None or str(value).upper() not in
                           {w.upper() for w in wanted}):
                return False
        return True

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.since:
            out["since"] = contract.iso(self.since)
        if self.until:
            out["until"] = contract.iso(self.until)
        for key in ("programs", "observations", "visits", "exposures", "instruments",
                    "exp_types"):
            if getattr(self, key):
                out[key] = sorted(getattr(self, key))
        return out


def facts_of(message: dict[str, Any]) -> tuple[str, dict[str, Any], dt.datetime | None]:
    """(item name, facts to select on, arrival time) of an arrival or a work order."""
    if message.get("schema") == "calstream.arrival":
        name = message["exposure_id"]
        header = message.get("header", {})
        facts = {"exposure_id": name, "instrument": header.get("INSTRUME"),
                 "exp_type": header.get("EXP_TYPE")}
        when = message.get("detected_at")
    else:
        name = message["product_name"]
        header = message.get("header") or {}
        facts = {"exposure_id": message.get("exposure_id") or name,
                 "program": message.get("program"), "observation": message.get("observation"),
                 "visit": message.get("visit"),
                 "instrument": message.get("instrument") or header.get("INSTRUME"),
                 "exp_type": message.get("exp_type") or header.get("EXP_TYPE")}
        when = message.get("arrived_at")
    try:
        parsed = parse_exposure_name(facts["exposure_id"])
        facts.setdefault("program", parsed.program)
        facts["program"] = facts["program"] or parsed.program
        facts["observation"] = facts.get("observation") or parsed.observation
        facts["visit"] = facts.get("visit") or parsed.visit
    except BadName:
        pass
    return name, facts, contract.parse_time(when) if when else None


@dataclass
class PartitionScan:
    """What one partition of the source holds now."""

    partition: int
    high_watermark: int
    first_offset: int | None = None  # first retained record
    first_time: dt.datetime | None = None  # its broker timestamp

    @property
    def log_start(self) -> int:
        return self.first_offset if self.first_offset is not None else self.high_watermark


@dataclass
class Candidate:
    partition: int
    offset: int
    timestamp_ms: int
    message: dict[str, Any]


@dataclass
class PartitionCoverage:
    partition: int
    log_start_offset: int
    high_watermark: int
    first_retained_time: str | None
    count: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    first_time: str | None = None
    last_time: str | None = None


def retention_gaps(scans: list[PartitionScan], since: dt.datetime | None) -> list[str]:
    """Partitions where the requested range reaches back past what is retained.

    A partition whose first retained offset is 0 has lost nothing, whatever
    its first timestamp. One that starts later has lost records to retention;
    if the request starts before its first retained record (or has no start),
    some of what was asked for may be gone.
    """
    gaps = []
    for s in sorted(scans, key=lambda s: s.partition):
        if s.log_start == 0:
            continue
        if s.first_time is None:
            gaps.append(f"partition {s.partition}: every record is gone (offsets 0..{s.log_start - 1}"
                        " fell out of retention)")
        elif since is None or since < s.first_time:
            gaps.append(f"partition {s.partition}: offsets 0..{s.log_start - 1} fell out of "
                        f"retention; the oldest retained record is offset {s.log_start} at "
                        f"{contract.iso(s.first_time)}, after the requested start "
                        f"{contract.iso(since) if since else '(everything)'}")
    return gaps


def select(candidates: list[Candidate], selection: Selection,
           live_input: Callable[[str], bool] | None = None,
           ) -> tuple[list[Candidate], int, int]:
    """The candidates to replay: matching, live, and the latest per item.

    Returns (selected, matched, superseded). A later message for the same item
    (a corrected redelivery, a complete association after a degraded one)
    replaces an earlier one; replayed messages (namespace not live), and work
    orders with an input that ``live_input`` says is not a live product, are
    never sources.
    """
    latest: dict[str, Candidate] = {}
    seen_events: set[str] = set()
    matched = 0
    for c in sorted(candidates, key=lambda c: (c.partition, c.offset)):
        m = c.message
        if m.get("replay") or (m.get("namespace") or "live") != "live" \
                or m.get("priority") == "replay":
            continue
        if live_input and not all(live_input(i["path"]) for i in m.get("inputs") or []):
            continue
        name, facts, when = facts_of(m)
        if not selection.matches(facts, when):
            continue
        if m["event_id"] in seen_events:
            continue  # the same event again (a redelivery): not another item
        seen_events.add(m["event_id"])
        matched += 1
        previous = latest.get(name)
        if previous is None or (c.timestamp_ms, c.partition, c.offset) >= \
                (previous.timestamp_ms, previous.partition, previous.offset):
            latest[name] = c
    chosen = sorted(latest.values(), key=lambda c: (c.partition, c.offset))
    return chosen, matched, matched - len(chosen)


def coverage(scans: list[PartitionScan], chosen: list[Candidate]) -> list[PartitionCoverage]:
    rows = {s.partition: PartitionCoverage(
        s.partition, s.log_start, s.high_watermark,
        contract.iso(s.first_time) if s.first_time else None) for s in scans}
    for c in sorted(chosen, key=lambda c: (c.partition, c.offset)):
        row = rows.setdefault(c.partition, PartitionCoverage(c.partition, 0, 0, None))
        t = contract.iso(c.timestamp_ms / 1000)
        row.count += 1
        if row.first_offset is None:
            row.first_offset, row.first_time = c.offset, t
        row.last_offset, row.last_time = c.offset, t
    return [rows[p] for p in sorted(rows)]


def replay_id(source: str, selection: Selection, namespace: str, crds_context: str | None,
              requested_at: str) -> str:
    canonical = json.dumps([source, selection.describe(), namespace, crds_context, requested_at],
                           sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def replayed_message(c: Candidate, *, source: str, topic: str, request: dict[str, Any]
                     ) -> tuple[str, contract.Message]:
    """The message to republish for candidate ``c``: (key, message)."""
    m = {k: v for k, v in c.message.items() if k not in ("event_id", "emitted_at", "producer")}
    replay = {**request, "source": {"topic": topic, "partition": c.partition, "offset": c.offset}}
    namespace, context = request["namespace"], request.get("crds_context")
    if source == "raw":
        body = {**m, "source": "replay", "priority": "replay", "replay": replay}
        eid = contract.event_id("arrival", m["exposure_id"], m["digest"], "replay",
                                request["replay_id"], namespace, context)
        return m["exposure_id"], contract.build("arrival", eid, **body)
    wid = work_id(pipeline=m["pipeline"], input_digests=[i["digest"] for i in m.get("inputs", [])],
                  crds_context=context or "", parameters=m.get("parameters") or {},
                  namespace=namespace)
    body = {**m, "work_id": wid, "priority": "replay", "namespace": namespace,
            "crds_context": context, "replay": replay}
    eid = contract.event_id("work_order", wid, request["replay_id"])
    return m["product_name"], contract.build("work_order", eid, **body)


# -- the broker side --------------------------------------------------------

async def scan(cfg: Config, name: str) -> tuple[list[Candidate], list[PartitionScan], int]:
    """Every record of ``name`` up to the high watermarks; (candidates,
    partitions, invalid records skipped)."""
    async with kafka.open_reader(cfg, [name]) as reader:
        if not reader.partitions:
            raise ConfigError(f"topic {name} does not exist on {cfg.kafka_bootstrap}")
        found: list[Candidate] = []
        scans = {tp.partition: PartitionScan(tp.partition, 0) for tp in reader.partitions}
        invalid = 0
        with anyio.fail_after(120):
            async for batch in reader.batches_to_end():
                for r in batch:
                    s = scans[r.partition]
                    if s.first_offset is None:
                        s.first_offset = r.offset
                        s.first_time = dt.datetime.fromtimestamp(r.timestamp / 1000, dt.UTC)
                    try:
                        message = contract.decode(r.value)
                    except contract.InvalidMessage:
                        invalid += 1  # the stage consumers dead-letter these
                        continue
                    found.append(Candidate(r.partition, r.offset, r.timestamp, message.body))
        for tp, high in reader.high_watermarks().items():
            scans[tp.partition].high_watermark = high
        return found, list(scans.values()), invalid


async def run_replay(cfg: Config, *, source: str, selection: Selection, namespace: str,
                     crds_context: str | None, dry_run: bool = False, allow_gap: bool = False,
                     by: str | None = None) -> dict[str, Any]:
    """Select, check retention, and (unless dry-run or a refused gap) publish.
    Returns the report."""
    check_namespace(namespace, allow_live=False)
    if crds_context is not None and not crds_context.endswith(".pmap"):
        raise ConfigError(f"--crds-context {crds_context!r} is not a context name "
                          "(e.g. jwst_1535.pmap)")
    topics = Topics(cfg.topic_prefix)
    src_logical, dst_logical, kind = SOURCES[source]
    src, dst = topics.name(src_logical), topics.name(dst_logical)
    found, scans, invalid = await scan(cfg, src)
    store = ProductStore(cfg.products)
    chosen, matched, superseded = select(
        [c for c in found if c.message.get("schema") == f"calstream.{kind}"], selection,
        live_input=lambda path: store.namespace_of(Path(path)) in ("live", None))
    gaps = retention_gaps(scans, selection.since)
    requested_at = contract.utc_now()
    rid = replay_id(source, selection, namespace, crds_context, requested_at)
    request = {"replay_id": rid, "from": source, "namespace": namespace,
               "crds_context": crds_context, "requested_at": requested_at,
               "selection": selection.describe()}
    if by:
        request["by"] = by
    messages = [replayed_message(c, source=source, topic=src, request=request) for c in chosen]
    refused = bool(gaps) and not allow_gap
    published = 0
    if messages and not dry_run and not refused:
        producer = kafka.producer(cfg)
        await producer.start()
        try:
            for key, message in messages:
                message.body.setdefault("producer", {"role": "replay"})
                await producer.send_and_wait(dst, contract.encode(message), key=key.encode())
                published += 1
        finally:
            await producer.stop()
    return {
        **request, "source_topic": src, "target_topic": dst, "dry_run": dry_run,
        "scanned": sum(1 for _ in found), "invalid_skipped": invalid, "matched": matched,
        "superseded": superseded, "selected": len(chosen), "published": published,
        "refused": refused, "gaps": gaps,
        "partitions": [asdict(p) for p in coverage(scans, chosen)],
        "items": [{"name": facts_of(c.message)[0], "partition": c.partition,
                   "offset": c.offset, "time": contract.iso(c.timestamp_ms / 1000)}
                  for c in chosen],
    }


# -- the command ------------------------------------------------------------

def _print_report(report: dict[str, Any], out=sys.stdout) -> None:
    verb = "would replay" if report["dry_run"] or report["refused"] else "replayed"
    print(f"replay {report['replay_id']}: {verb} {report['selected']} item(s) from "
          f"{report['source_topic']} into namespace {report['namespace']} "
          f"(CRDS context {report['crds_context'] or 'the daemon default'}) via "
          f"{report['target_topic']}", file=out)
    print(f"  scanned {report['scanned']} record(s), {report['matched']} matched, "
          f"{report['superseded']} superseded by a later message for the same item, "
          f"{report['invalid_skipped']} invalid skipped; published {report['published']}",
          file=out)
    print(f"  {'part':>4} {'retained from':>13} {'high':>6} {'count':>5}  "
          f"{'first offset/time':32} last offset/time", file=out)
    for p in report["partitions"]:
        first = f"{p['first_offset']} {p['first_time']}" if p["count"] else "-"
        last = f"{p['last_offset']} {p['last_time']}" if p["count"] else "-"
        print(f"  {p['partition']:>4} {p['log_start_offset']:>13} {p['high_watermark']:>6} "
              f"{p['count']:>5}  {first:32} {last}", file=out)
    if report["dry_run"]:
        for item in report["items"]:
            print(f"  {item['name']}  [{item['partition']}]@{item['offset']}  {item['time']}",
                  file=out)


def cmd_replay(cfg: Config, args: argparse.Namespace) -> int:
    try:
        namespace = check_namespace(args.namespace, allow_live=False)
    except BadNamespace as exc:
        raise ConfigError(str(exc)) from None
    selection = Selection(
        since=parse_when(args.since), until=parse_when(args.until),
        programs=set(args.program or ()), observations=set(args.observation or ()),
        visits=set(args.visit or ()), exposures=set(args.exposure or ()),
        instruments=set(args.instrument or ()), exp_types=set(args.exp_type or ()))
    report = anyio.run(lambda: run_replay(
        cfg, source=args.source, selection=selection, namespace=namespace,
        crds_context=args.crds_context, dry_run=args.dry_run, allow_gap=args.allow_gap,
        by=args.by or getpass.getuser()))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_report(report)
    if report["gaps"]:
        bar = "!" * 78
        lines = [bar, "REPLAY RANGE NOT FULLY RETAINED: the request reaches back past the "
                 "oldest retained record", *(f"  {g}" for g in report["gaps"])]
        lines.append("  nothing was published; re-run with --allow-gap to replay what is "
                     "retained" if report["refused"] else
                     "  --allow-gap: what is retained was replayed; the rest is NOT covered")
        print("\n".join([*lines, bar]), file=sys.stderr)
        return 0 if args.allow_gap else EXIT_GAP
    if not report["selected"]:
        print("replay: nothing matched the selection", file=sys.stderr)
    return 0


def add_parser(sub, daemon_flags, load_config) -> None:
    p = sub.add_parser("replay", help="reprocess a selection into a namespace, at low priority",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    daemon_flags(p)
    p.add_argument("--from", dest="source", choices=sorted(SOURCES), default="raw",
                   help="raw: everything again from the arrivals (default); stage2/stage3: "
                        "that stage again, from the existing earlier-stage products")
    p.add_argument("--namespace", required=True,
                   help="output namespace (not 'live'): products go to their own tree")
    p.add_argument("--crds-context", help="e.g. jwst_1535.pmap (default: the daemon's)")
    p.add_argument("--since", help="arrival time from (inclusive), RFC 3339 or a date")
    p.add_argument("--until", help="arrival time up to (exclusive)")
    for flag, what in (("program", "5 digits"), ("observation", "3 digits"),
                       ("visit", "3 digits"), ("exposure", "exposure id / product name"),
                       ("instrument", "e.g. NIRCAM"), ("exp-type", "e.g. NRC_IMAGE")):
        p.add_argument(f"--{flag}", action="append", help=f"{what}; repeatable")
    p.add_argument("--dry-run", action="store_true", help="list what would run; publish nothing")
    p.add_argument("--allow-gap", action="store_true",
                   help="replay what is retained even if the range reaches past retention")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("--by", help="who asked (recorded; default: the user name)")

    def run(args: argparse.Namespace) -> int:
        cfg = load_config(args)
        if not cfg.kafka_bootstrap:
            raise ConfigError("replay needs the deployment's broker: --kafka-bootstrap")
        return cmd_replay(cfg, args)

    p.set_defaults(func=run)
