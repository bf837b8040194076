"""``calstream status``: what a running deployment is doing, for a human.

Two sources, because neither tells the whole story alone:

* the broker says what *waits*: each stage's consumer group's committed
  offsets against the topics' high watermarks (the lag), and the newest dead
  letters and product events;
* each daemon's metrics endpoint says what *runs*: in-flight work, outcomes,
  worker memory and restarts, and whether the daemon is ready.

Everything here is read-only: no group is joined, nothing is committed and
nothing is written to any topic.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
from prometheus_client.parser import text_string_to_metric_families

from calstream.daemon.operations import deployment
from calstream.daemon.operations.config import ROLES, Config, host_port, load
from calstream.daemon.stages import STAGES, stage
from calstream.topics import contract
from calstream.topics.catalog import Topics

log = logging.getLogger("calstream.status")

# The topics each stage's consumer group "<group_prefix>.<stage>" reads
# (daemon/stages.py). The planner is not here: it reads every partition of
# products without a group, so it has no lag to report.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {st.name: (st.live_topic, st.replay_topic)
                                             for st in STAGES if st.name in ROLES}


# -- the metrics endpoints ------------------------------------------------

@dataclass
class Endpoint:
    url: str
    reachable: bool = False
    error: str | None = None
    ready: bool | None = None
    problems: list[str] = field(default_factory=list)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    planner: dict[str, Any] | None = None  # /planner, from a daemon with the planner role


def endpoint_base(url: str) -> str:
    """'host:port', 'http://host:port' or '.../metrics' -> 'http://host:port'."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    for suffix in ("/metrics", "/readyz", "/healthz"):
        url = url.removesuffix(suffix)
    return url


def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def read_endpoint(url: str, timeout: float = 5.0) -> Endpoint:
    base = endpoint_base(url)
    ep = Endpoint(base)
    try:
        text = _fetch(f"{base}/metrics", timeout).decode()
    except (OSError, urllib.error.URLError) as exc:
        ep.error = f"metrics unreachable: {exc}"
        return ep
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                ep.samples.append((s.name, dict(s.labels), s.value))
    except ValueError as exc:
        ep.error = f"/metrics is not Prometheus text: {exc}"
        return ep
    ep.reachable = True
    try:
        body = _fetch(f"{base}/readyz", timeout)
    except urllib.error.HTTPError as exc:  # 503 carries the reasons in its body
        body = exc.read()
    except OSError as exc:
        ep.error = f"/readyz unreachable: {exc}"
        return ep
    try:
        doc = json.loads(body)
        ep.ready, ep.problems = bool(doc["ready"]), list(doc.get("problems", []))
    except (ValueError, KeyError, TypeError):
        ep.error = f"/readyz answered something unexpected: {body[:200]!r}"
    try:
        ep.planner = json.loads(_fetch(f"{base}/planner", timeout))
    except (OSError, ValueError):
        ep.planner = None  # 404: this daemon runs no planner
    return ep


def _values(endpoints: list[Endpoint], name: str) -> list[tuple[dict[str, str], float]]:
    return [(labels, v) for ep in endpoints for n, labels, v in ep.samples if n == name]


def summarise_metrics(endpoints: list[Endpoint]) -> dict[str, dict[str, Any]]:
    """Per stage, summed over every daemon (max for memory, newest for progress).

    A stage has only the keys its daemons reported: the watcher has no
    in-flight work, a consumer stage has no inbox."""
    stages: dict[str, dict[str, Any]] = {}

    def add(stage: str, key: str, value: float, sub: str | None = None) -> None:
        s = stages.setdefault(stage, {})
        if sub is None:
            s[key] = s.get(key, 0) + int(value)
        else:
            d = s.setdefault(key, {})
            d[sub] = d.get(sub, 0) + int(value)

    for labels, v in _values(endpoints, "calstream_in_flight"):
        add(labels["stage"], "in_flight", v)
    for labels, v in _values(endpoints, "calstream_stage_runs_total"):
        add(labels["stage"], "runs", v, labels["outcome"])
    for labels, v in _values(endpoints, "calstream_stage_retries_total"):
        add(labels["stage"], "retries", v)
    for labels, v in _values(endpoints, "calstream_dead_letters_total"):
        add(labels["stage"], "dead_letters", v, labels["category"])
    for labels, v in _values(endpoints, "calstream_worker_restarts_total"):
        add(labels["stage"], "worker_restarts", v, labels["cause"])
    for labels, v in _values(endpoints, "calstream_arrivals_total"):
        add("watcher", "arrivals", v, labels["source"])
    for _labels, v in _values(endpoints, "calstream_watcher_pending_files"):
        add("watcher", "pending_files", v)
    for labels, v in _values(endpoints, "calstream_worker_peak_rss_bytes"):
        s = stages.setdefault(labels["stage"], {})
        s["worker_peak_rss_bytes"] = max(s.get("worker_peak_rss_bytes", 0), int(v))
    for labels, v in _values(endpoints, "calstream_last_progress_timestamp_seconds"):
        s = stages.setdefault(labels["stage"], {})
        s["last_progress"] = max(s.get("last_progress", 0.0), v)
    return stages


def summarise_planner(endpoints: list[Endpoint]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _labels, v in _values(endpoints, "calstream_held_exposures"):
        out["held"] = out.get("held", 0) + int(v)
    for _labels, v in _values(endpoints, "calstream_oldest_hold_age_seconds"):
        out["oldest_hold_age_seconds"] = max(out.get("oldest_hold_age_seconds", 0.0), v)
    for labels, v in _values(endpoints, "calstream_open_associations"):
        d = out.setdefault("open_associations", {})
        d[labels["stage"]] = d.get(labels["stage"], 0) + int(v)
    views = [ep.planner for ep in endpoints if ep.planner]
    if views:
        out["view"] = views[0]  # one planner per deployment
    return out


# -- the broker -----------------------------------------------------------

@dataclass
class PartitionLag:
    partition: int
    committed: int | None  # None: the group has committed nothing here
    high: int
    lag: int


@dataclass
class GroupLag:
    stage: str
    group: str
    topic: str
    lag: int | None = None
    partitions: list[PartitionLag] = field(default_factory=list)
    members: int | None = None
    state: str | None = None
    error: str | None = None


@dataclass
class BrokerView:
    bootstrap: str | None
    error: str | None = None
    lag: list[GroupLag] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    holds: list[dict[str, Any]] | None = None  # current holds; None: topic unreadable
    unreadable: int = 0  # records on those topics that are not calstream messages
    missing_topics: list[str] = field(default_factory=list)


async def _tails(cfg: Config, wanted: dict[str, int | None], view: BrokerView):
    """High watermarks of every partition of ``wanted`` (topic -> n), and the
    last n records of each partition (all of them for n = None).

    The high watermark comes from fetch responses: end_offsets is wrong on
    tansu (see docs/operations.md), so it only says where to start reading,
    never where the end is. A start below the true end costs a few more
    records; it never loses one.
    """
    from calstream.daemon.doers import kafka

    async with kafka.open_reader(cfg, list(wanted), fetch_max_wait_ms=100) as reader:
        view.missing_topics.extend(reader.missing)
        if not reader.partitions:
            return {}, {}, {}
        begin = await reader.start_at_tail(wanted)
        records: dict[str, list] = {t: [] for t in wanted}
        async for batch in reader.batches_to_end():
            for r in batch:
                records[r.topic].append(r)
        return reader.high_watermarks(), begin, records


async def _group_offsets(cfg: Config, group: str, tps: list) -> tuple[dict, int | None, str | None]:
    from calstream.daemon.doers import kafka

    return await kafka.group_offsets(cfg, group, tps)


def _decoded(records, expected: str, view: BrokerView, n: int) -> list[dict[str, Any]]:
    out = []
    for r in records:
        try:
            msg = contract.decode(r.value, expected=expected)
        except contract.InvalidMessage:
            view.unreadable += 1
            continue
        out.append({**msg.body, "_topic": r.topic, "_partition": r.partition,
                    "_offset": r.offset})
    out.sort(key=lambda m: (m["emitted_at"], m["_offset"]))
    return out[-n:] if n else []


async def read_broker(cfg: Config, *, dead_letters: int = 10, products: int = 10) -> BrokerView:
    topics = Topics(cfg.topic_prefix)
    view = BrokerView(cfg.kafka_bootstrap)
    inputs = {topics.name(t) for ins in STAGE_INPUTS.values() for t in ins}
    wanted = {name: 0 for name in inputs}
    wanted[topics.name("deadletter")] = dead_letters
    wanted[topics.name("products")] = products
    # Compacted (on Kafka; tansu never compacts): read it all, the last record
    # per key is the exposure's current state.
    wanted[topics.name("holds")] = None
    highs, begin, records = await _tails(cfg, wanted, view)
    for stage_name, logical in STAGE_INPUTS.items():
        group = stage(stage_name).group(cfg.group_prefix)
        for name in (topics.name(t) for t in logical):
            row = GroupLag(stage_name, group, name)
            view.lag.append(row)
            tps = sorted((tp for tp in highs if tp.topic == name), key=lambda tp: tp.partition)
            if not tps:
                row.error = "topic does not exist"
                continue
            try:
                offsets, row.members, row.state = await _group_offsets(cfg, group, tps)
            except Exception as exc:
                row.error = f"cannot read the group's offsets: {exc}"
                continue
            for tp in tps:
                committed = offsets.get(tp)
                # A group without a commit starts at the earliest record
                # (auto_offset_reset="earliest"), so all of it is waiting.
                start = committed if committed is not None else begin[tp]
                row.partitions.append(PartitionLag(tp.partition, committed, highs[tp],
                                                   max(0, highs[tp] - start)))
            row.lag = sum(p.lag for p in row.partitions)
    view.dead_letters = _decoded(records.get(topics.name("deadletter"), []), "dead_letter",
                                 view, dead_letters)
    view.products = _decoded(records.get(topics.name("products"), []), "product", view,
                             products)
    if topics.name("holds") not in view.missing_topics:
        last: dict[str, dict[str, Any]] = {}
        for r in records.get(topics.name("holds"), []):
            key = r.key.decode("utf-8", "replace") if r.key is not None else ""
            if r.value is None:  # a tombstone forgets the exposure
                last.pop(key, None)
                continue
            try:
                last[key] = contract.decode(r.value, expected="hold").body
            except contract.InvalidMessage:
                view.unreadable += 1
        view.holds = sorted((h for h in last.values() if h["state"] == "held"),
                            key=lambda h: h["since"])
    return view


# -- putting it together --------------------------------------------------

@dataclass
class Status:
    at: float
    topic_prefix: str
    group_prefix: str
    endpoints: list[Endpoint]
    stages: dict[str, dict[str, Any]]
    broker: BrokerView
    # What the planner's metrics say: held exposures, the oldest hold's age,
    # open associations per stage (absent when no daemon given runs a planner).
    planner: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return (self.broker.error is None and all(e.reachable and e.ready for e in self.endpoints)
                and not any(row.error for row in self.broker.lag))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for ep in d["endpoints"]:
            del ep["samples"]  # the raw scrape is what /metrics is for
        d["healthy"] = self.healthy
        return d


async def collect(cfg: Config, metrics_urls: list[str], *, dead_letters: int = 10,
                  products: int = 10, timeout: float = 15.0) -> Status:
    endpoints = [await anyio.to_thread.run_sync(read_endpoint, url, min(timeout, 5.0))
                 for url in metrics_urls]
    if cfg.kafka_bootstrap:
        try:
            with anyio.fail_after(timeout):
                broker = await read_broker(cfg, dead_letters=dead_letters, products=products)
        except TimeoutError:
            broker = BrokerView(cfg.kafka_bootstrap, error=f"no answer within {timeout:.0f}s")
        except Exception as exc:
            broker = BrokerView(cfg.kafka_bootstrap, error=f"{type(exc).__name__}: {exc}")
    else:
        broker = BrokerView(None, error="no broker configured (--kafka-bootstrap, or "
                                        "kafka_bootstrap in the config file)")
    return Status(time.time(), cfg.topic_prefix, cfg.group_prefix, endpoints,
                  summarise_metrics(endpoints), broker, summarise_planner(endpoints))


# -- rendering --------------------------------------------------------------

def _ago(t: float | None, now: float) -> str:
    if not t:
        return "never"
    s = max(0.0, now - t)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def _when(iso: str, now: float) -> str:
    try:
        t = contract.parse_time(iso)
    except ValueError:
        return iso
    return f"{t.strftime('%Y-%m-%d %H:%M:%S')}Z ({_ago(t.timestamp(), now)})"


def _mib(b: int) -> str:
    return f"{b / 2**20:.0f} MiB"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def render(st: Status) -> str:
    now = st.at
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    b = st.broker
    out = [f"calstream status at {stamp}",
           f"broker {b.bootstrap or '(none)'}; topics {st.topic_prefix}*; "
           f"consumer groups {st.group_prefix}.*", ""]

    out.append("Daemons (metrics endpoints)")
    if not st.endpoints:
        out.append("  none given (--metrics-url HOST:PORT, repeatable)")
    for ep in st.endpoints:
        if not ep.reachable:
            out.append(f"  {ep.url}  UNREACHABLE  {ep.error}")
            continue
        info = next((labels for n, labels, _ in ep.samples if n == "calstream_build_info"), {})
        versions = (f"calstream {info.get('calstream_version', '?')}, jwst "
                    f"{info.get('jwst_version', '?')}, CRDS {info.get('crds_context', '?')}")
        state = "ready" if ep.ready else "NOT READY"
        out.append(f"  {ep.url}  {state}  {versions}")
        for p in ep.problems:
            out.append(f"      problem: {p}")
        if ep.error:
            out.append(f"      {ep.error}")
    out.append("")

    out.append("Work per stage (summed over the daemons above)")
    if not st.stages:
        out.append("  no stage reported by the metrics endpoints")
    for name, s in sorted(st.stages.items()):
        facts = []
        if "in_flight" in s:
            facts.append(f"in flight {s['in_flight']}")
        if "last_progress" in s:
            facts.append(f"last finished or started {_ago(s['last_progress'], now)}")
        if "arrivals" in s:
            facts.append(f"announced {sum(s['arrivals'].values())} "
                         f"({_counts(s['arrivals'])})")
        if "pending_files" in s:
            facts.append(f"incomplete files in the inbox {s['pending_files']}")
        if "runs" in s:
            facts.append(f"runs: {_counts(s['runs'])}")
        if "retries" in s:
            facts.append(f"retries {s['retries']}")
        if "worker_peak_rss_bytes" in s:
            facts.append(f"worker peak RSS {_mib(s['worker_peak_rss_bytes'])}")
        if "worker_restarts" in s:
            facts.append(f"worker restarts: {_counts(s['worker_restarts'])}")
        if "dead_letters" in s:
            facts.append(f"dead letters: {_counts(s['dead_letters'])}")
        out.append(f"  {name}: " + "; ".join(facts))
    out.append("")

    out.append("Consumer lag (from the broker: committed offsets vs high watermarks)")
    if b.error:
        out.append(f"  broker unavailable: {b.error}")
    for row in b.lag:
        head = f"  {row.stage}: group {row.group} on {row.topic}"
        if row.error:
            out.append(f"{head}: {row.error}")
            continue
        members = "" if row.members is None else f"; {row.members} member(s), {row.state}"
        parts = " ".join(f"{p.partition}:{'-' if p.committed is None else p.committed}/{p.high}"
                         for p in row.partitions)
        out.append(f"{head}: lag {row.lag}{members}")
        out.append(f"      partition:committed/high  {parts}")
    out.append("")

    if not b.error:
        out.append(f"Recent dead letters (newest last, up to {len(b.dead_letters)} shown)")
        if not b.dead_letters:
            out.append("  none")
        for m in b.dead_letters:
            subject = m.get("exposure_id") or (Path(m["path"]).name if m.get("path") else None) \
                or (m.get("original") or {}).get("key") or "-"
            reason = " ".join(str(m["reason"]).split())
            out.append(f"  {_when(m['emitted_at'], now)}  {m['stage']}/{m['category']}  "
                       f"{subject}: {reason[:160]}")
        out.append("")
        out.append(f"Recent products (newest last, up to {len(b.products)} shown)")
        if not b.products:
            out.append("  none")
        for m in b.products:
            suffixes = ",".join(o.get("suffix", "?") for o in m.get("outputs", [])) or "-"
            took = f"{m['duration_seconds']:.1f}s" if m.get("duration_seconds") else "-"
            flag = "  pointing PROVISIONAL" if m.get("pointing_provisional") else ""
            out.append(f"  {_when(m['emitted_at'], now)}  {m['stage']}  {m['outcome']}  "
                       f"{m['product_name']}  [{suffixes}]  {took}{flag}")
        if b.unreadable:
            out.append(f"  ({b.unreadable} record(s) on these topics are not calstream "
                       "messages; skipped)")
        if b.missing_topics:
            out.append(f"  missing topics: {', '.join(b.missing_topics)}")
        out.append("")

    out.append("Held exposures, associations, missing exposures")
    pl = st.planner
    if b.holds is None:
        out.append("  held exposures (holds topic): unavailable")
    else:
        out.append(f"  held exposures (holds topic): {len(b.holds)}")
        for h in b.holds[:20]:
            out.append(f"    {h['exposure_id']}  held since {_when(h['since'], now)}: "
                       f"{' '.join(str(h['reason']).split())[:120]}")
        if len(b.holds) > 20:
            out.append(f"    ... and {len(b.holds) - 20} more")
    # The hold gauges have no labels, so every daemon exports them (as 0);
    # open_associations is set by a running planner only.
    if "open_associations" in pl:
        out.append(f"  held exposures (planner metrics): {pl.get('held', 0)}, oldest "
                   f"{pl.get('oldest_hold_age_seconds', 0) / 3600:.1f} h")
        out.append(f"  open associations (planner metrics): {_counts(pl['open_associations'])}")
    else:
        out.append("  open associations: not reported (no daemon given runs the planner role)")
    out += _render_planner_view(pl.get("view"), now)
    return "\n".join(out) + "\n"


def _render_planner_view(view: dict[str, Any] | None, now: float) -> list[str]:
    if not view:
        return ["  missing exposures: not reported (no daemon given serves /planner)"]
    out = []
    if view.get("plans"):
        out.append("  plans loaded: " + "; ".join(
            f"{p['source']} ({p['exposures']} exposures, program {', '.join(p['programs'])})"
            for p in view["plans"]))
    for namespace, ns in sorted(view.get("namespaces", {}).items()):
        tag = "" if namespace == "live" else f" [namespace {namespace}]"
        stage3 = ns.get("stage3", {})
        missing = stage3.get("missing", {})
        out.append(f"  missing exposures{tag}: {len(missing)}"
                   + (f", the oldest for {stage3.get('oldest_missing_age', 0) / 3600:.1f} h"
                      if missing else ""))
        for eid, m in sorted(missing.items(), key=lambda kv: kv[1]["since"])[:20]:
            out.append(f"    {eid}  expected since {_ago(m['since'], now)} by "
                       f"{', '.join(m['candidates'])}")
        if len(missing) > 20:
            out.append(f"    ... and {len(missing) - 20} more")
        waiting2 = ns.get("stage2_waiting", {})
        if waiting2:
            out.append(f"  stage-2 associations waiting{tag}: {len(waiting2)}")
            for science, why in sorted(waiting2.items())[:20]:
                out.append(f"    {science}: " + ("; ".join(f"{k}: {v}" for k, v in why.items())
                                                 or "being evaluated"))
        cands = stage3.get("candidates", [])
        if cands:
            out.append(f"  stage-3 candidates open{tag}: {len(cands)}")
            for c in cands[:20]:
                why = "; ".join(f"{k}: {v}" for k, v in c["waiting_for"].items()) or \
                    f"settling ({c['quiet_for']:.0f}s quiet)"
                out.append(f"    {c['candidate']} ({c['asn_type']}, {c['members']} member(s), "
                           f"expected by {c['expected_by']}"
                           + (f", {c['versions']} version(s) sent" if c["versions"] else "")
                           + f"): {why}")
    return out


# -- the command ------------------------------------------------------------

def default_metrics_url(cfg: Config) -> str | None:
    host, port = host_port(cfg.metrics_address)
    if port == 0:
        return None
    return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def cmd_status(args: argparse.Namespace) -> int:
    from calstream.daemon.operations import logs

    flags = {k: getattr(args, k) for k in ("kafka_bootstrap", "topic_prefix", "group_prefix",
                                          "work_dir") if getattr(args, k) is not None}
    cfg = deployment.discover(load(args.config, flags=flags))
    logs.setup(args.log_level, False)
    if logging.getLogger().level > logging.DEBUG:
        # A broker that cannot be reached is reported in the summary itself.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    urls = args.metrics_url or [u for u in [default_metrics_url(cfg)] if u]
    st = anyio.run(lambda: collect(cfg, urls, dead_letters=args.dead_letters,
                                   products=args.products, timeout=args.timeout))
    if args.json:
        json.dump(st.as_dict(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(st))
    return 0 if st.healthy else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status", help="summary of a running deployment, from the broker and the metrics",
        description="What a running deployment is doing: readiness and in-flight work per "
                    "daemon, consumer lag per topic, recent dead letters and products. "
                    "Exit status 1 when a daemon is unreachable or not ready, or the "
                    "broker cannot be read.")
    p.add_argument("--config", type=Path, default=os.environ.get("CALSTREAM_CONFIG"),
                   help="the deployment's TOML file (broker, prefixes, TLS/SASL)")
    p.add_argument("--kafka-bootstrap", help="HOST:PORT[,...] of the broker")
    p.add_argument("--work-dir", type=Path, help="a deployment's work dir: its broker and "
                   "endpoint are read from WORK/deployment.json")
    p.add_argument("--topic-prefix", help="prefix of every topic name (default 'calstream.')")
    p.add_argument("--group-prefix", help="prefix of the consumer groups (default 'calstream')")
    p.add_argument("--metrics-url", action="append",
                   help="a daemon's metrics endpoint, HOST:PORT or URL; repeat for each daemon "
                        "(default: metrics_address of the config)")
    p.add_argument("--dead-letters", type=int, default=10, metavar="N",
                   help="show the last N dead letters (default 10)")
    p.add_argument("--products", type=int, default=10, metavar="N",
                   help="show the last N product events (default 10)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the broker")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=cmd_status)
    return p

