"""Forged stage records reach no run they can turn outside its roots.

What a stage consumer admits (doers/record_admitter.py) becomes a run: an
arrival a detector1 run on an inbox file, a work order a stage-2 or stage-3
run on products of the store, a replayed one either in a namespace of its
own. A mutation fuzz (this file's) takes real messages -- arrivals as the
watcher announces real uncal files, work orders as the planner makes them,
replays of both as `calstream replay` republishes them -- forges one or more
of their fields, and hands each record to the real admitter. Behind it the
real runner and product store work on tmp roots; only the worker is a
stand-in, doing what a worker does before jwst starts (the association file
in the scratch directory) and writing one product. Each record must end as a
dead letter with a reason, a stale record, or a run whose every path lies
inside its roots; never an exception out of the handler (the consumer would
retry it forever), never a write outside the roots.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord, RecordMetadata, TopicPartition

from calstream.daemon.doers.kafka import Publisher
from calstream.daemon.doers.preview_runner import PREVIEW_TASK
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.doers.record_admitter import RecordAdmitter
from calstream.daemon.doers.work_item_runner import WorkItemRunner
from calstream.daemon.doers.worker_pool import TaskOutcome
from calstream.daemon.operations.config import load
from calstream.daemon.operations.metrics import Metrics
from calstream.daemon.stages import ASSOCIATION_TASK, stage
from calstream.steps.association_run import _wfss_directory
from calstream.steps.exposure import describe_exposure
from calstream.steps.fitsfile import file_digest
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, small_uncal
from calstream.topics import contract
from calstream.topics.catalog import Topics

from .planner_stream import new_state, play, steps

# Values a forger (or a broken producer) may put anywhere a message has one.
WEIRD = [None, "", " ", "0", "-1", "live", "current", "namespaces", "promotions", "ctx1",
         "replay", "watch", "stage2", "stage3", "calwebb_image2", "calwebb_dark", "nan",
         0, -1, 1, 2, 1.5, -0.0, 1e308, True, False, [], {}, ["a"], {"a": 1}, [{}],
         10**18, 10**29, -10**29, "../x", "..", "/", "a/b", ".hidden", "a" * 300,
         "\u00e9\u4e2d", "x\x00y", "jw../../x", "jw01234001001_02101_00001_nrcb1",
         "jw01234-o001_t001_nircam_clear-f150w", "o001", "001", "01234", "99999",
         "jwst_0002.pmap", "../../x.pmap", "x_asn.json", "../x_asn.json",
         "sha256:" + "0" * 64, "2026-01-01T00:00:00Z", "0123456789abcdef",
         {"replay_id": "0123456789abcdef", "namespace": "ctx1"},
         {"replay_id": "0123456789abcdef", "namespace": "ctx1", "crds_context": "../../x.pmap"},
         {"replay_id": "0123456789abcdef", "namespace": "ctx2", "crds_context": None}]
KEYS = ["replay", "namespace", "priority", "version", "crds_context", "association_path",
        "observation", "source", "exposure_id", "visit", "instrument", "exp_type",
        "pointing_quality", "pointing_provisional", "releases", "degraded", "parameters",
        "arrived_at", "members", "candidate", "header", "size", "path", "inputs", "x"]
REQUEST = {"replay_id": "0123456789abcdef", "namespace": "ctx1", "crds_context": "jwst_0002.pmap",
           "requested_at": "2026-01-01T00:00:00Z", "selection": {}}


def _nested(depth: int):
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


class _Producer:
    def __init__(self):
        self.sent: list[tuple[str, contract.Message]] = []

    async def send(self, topic, value, key):
        """As aiokafka's: the message handed over, the acknowledgement's future
        (where the broker put it: one partition, offsets in the order sent)."""
        self.sent.append((topic, contract.decode(value)))  # what leaves follows the contract
        answered = asyncio.get_running_loop().create_future()
        answered.set_result(RecordMetadata(topic, 0, TopicPartition(topic, 0), len(self.sent) - 1,
                                           -1, 0, 0))
        return answered


class _Pool:
    """The warm worker pool, its worker doing what a worker does before jwst
    starts (steps/association_run.py: the association file in the scratch
    directory, the working directory of a WFSS run) and writing one product."""

    stage = "any"  # one pool for every stage's items here

    def __init__(self):
        self.written: list[Path] = []
        self.output_dirs: list[Path] = []
        self.cwds: list[Path] = []

    async def run(self, task, kwargs, *, timeout, log_path=None, env=None, priority=0,
                  still_needed=None, share_cores=None, started=None):
        if task == PREVIEW_TASK:
            return TaskOutcome({"made": [], "failed": {}})
        out = Path(kwargs["output_dir"]).resolve()
        out.mkdir(parents=True, exist_ok=True)
        self.output_dirs.append(out)
        if task == ASSOCIATION_TASK:
            asn = kwargs["association"]
            asn_path = out / Path(kwargs["asn_filename"]).name
            asn_path.write_text(json.dumps(asn, indent=1))
            if kwargs.get("corrections"):
                # The private copies of corrected members (_with_corrections).
                self.written += [out / ".inputs" / Path(m["expname"]).name
                                 for p in asn["products"] for m in p["members"]]
            self.cwds += [d for d in [_wfss_directory(asn, out)] if d is not None]
            # Not "_cal": a stage-2 run would replace the file a stage-3 order reads.
            product = out / f"{asn['products'][0]['name']}_fuzz.fits"
            outputs = [asn_path, product]
        else:
            product = out / Path(kwargs["input_path"]).name.replace("_uncal.", "_rate.")
            outputs = [product]
        product.write_bytes(b"SIMPLE  = T")
        self.written += outputs
        return TaskOutcome({"outputs": [str(p) for p in outputs], "pipeline": "x",
                            "jwst_version": "3.0.0", "crds_context": None,
                            "duration_seconds": 0.01})


class _Runner(WorkItemRunner):
    async def run(self, item):
        self.items.append(item)
        await super().run(item)


@dataclass
class World:
    tmp: Path
    cfg: object
    runner: _Runner
    producer: _Producer
    pool: _Pool
    hostile_paths: list[str]
    arrivals: list[dict] = field(default_factory=list)
    orders: list[dict] = field(default_factory=list)

    def admitter(self, name: str) -> RecordAdmitter:
        return RecordAdmitter(self.cfg, self.runner, stage(name))


def _uncal(inbox: Path, **changes) -> Path:
    header = {**SMALL_UNCAL_HEADER, **changes}
    name = (f"jw{header['PROGRAM']}{header['OBSERVTN']}{header['VISIT']}_{header['VISITGRP']}"
            f"{header['SEQ_ID']}{header['ACT_ID']}_{header['EXPOSURE']}_nrcb1_uncal.fits")
    path = inbox / name
    path.write_bytes(small_uncal(header, np.zeros((1, 2, 4, 4), dtype=np.uint16)))
    return path


def _arrival(path: Path) -> dict:
    """As the watcher announces it (roles.py, on_arrival)."""
    info = describe_exposure(path)
    digest = file_digest(path)
    return contract.build(
        "arrival", contract.event_id("arrival", info.exposure_id, digest),
        exposure_id=info.exposure_id, path=str(path), digest=digest, size=path.stat().st_size,
        detected_at="2026-01-02T03:04:05.000Z", source="watch", priority="live",
        header=info.header).body


def _rerooted(value, old: str, new: str):
    if isinstance(value, str):
        return new + value[len(old):] if value.startswith(old) else value
    if isinstance(value, list):
        return [_rerooted(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _rerooted(v, old, new) for k, v in value.items()}
    return value


def _replayed(body: dict, source: str, offset: int) -> dict:
    from calstream.daemon.deciders.replay_selection import Candidate, replayed_message
    topic = {"raw": "raw", "stage2": "work.stage2", "stage3": "work.stage3"}[source]
    return replayed_message(Candidate(0, offset, 0, body), source=source, topic=topic,
                            request={**REQUEST, "from": source})[1].body


def _world(tmp: Path) -> World:
    cfg = load(None, env={}, flags={"work_dir": tmp / "work"})
    cfg.inbox.mkdir(parents=True)
    cfg.products.mkdir(parents=True)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    metrics, producer, pool = Metrics(), _Producer(), _Pool()
    publisher = Publisher(producer, Topics("calstream."), metrics)
    runner = _Runner(cfg, publisher, ProductStore(cfg.products), pool, metrics, "jwst_0001.pmap")
    runner.items = []
    uncal = [_uncal(cfg.inbox), _uncal(cfg.inbox, EXPOSURE="00002", EXP_TYPE="NRC_DARK"),
             _uncal(cfg.inbox, EXPOSURE="00003", ENGQLPTG="PLANNED")]
    # Work orders as the planner makes them, their inputs real files of the store.
    orders = [e.message.body for e in play(new_state(), steps()) if e.message.type == "work_order"]
    orders = [_rerooted(o, "/products/", f"{cfg.products}/") for o in orders]
    for order in orders:
        for item in order["inputs"]:
            path = Path(item["path"])
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(path.name.encode())
            item["digest"], item["size"] = file_digest(path), path.stat().st_size
    # Paths a forger may name: outside the roots, through them by "..", by a
    # symlink (of a file, of a directory), not files at all.
    outside_uncal = elsewhere / uncal[0].name
    outside_uncal.write_bytes(uncal[0].read_bytes())
    outside_rate = elsewhere / Path(orders[0]["inputs"][0]["path"]).name
    outside_rate.write_bytes(b"elsewhere")
    (cfg.inbox / "jw01234001001_02101_00009_nrcb1_uncal.fits").symlink_to(outside_uncal)
    (cfg.inbox / "linked").symlink_to(elsewhere, target_is_directory=True)
    (cfg.products / "01001" / "001" / "jw01001001001_02101_00009_nrcb1_rate.fits").symlink_to(
        outside_rate)
    (cfg.products / "linked").symlink_to(elsewhere, target_is_directory=True)
    (cfg.inbox / "jw01234001001_02101_00008_nrcb1_uncal.fits").mkdir()
    os.mkfifo(cfg.products / "01001" / "001" / "jw01001001001_02101_00008_nrcb1_rate.fits")
    for root in (cfg.inbox, cfg.products):  # a loop of links: resolve() raises, not ELOOP
        (root / "loop").symlink_to(root / "loop2")
        (root / "loop2").symlink_to(root / "loop")
    hostile = [str(outside_uncal), str(outside_rate),
               f"{cfg.inbox}/../elsewhere/{uncal[0].name}",
               f"{cfg.products}/../elsewhere/{outside_rate.name}",
               f"{cfg.products}/01001/../../elsewhere/{outside_rate.name}",
               str(cfg.inbox / "jw01234001001_02101_00009_nrcb1_uncal.fits"),
               str(cfg.inbox / "linked" / uncal[0].name),
               str(cfg.products / "01001" / "001" / "jw01001001001_02101_00009_nrcb1_rate.fits"),
               str(cfg.products / "linked" / outside_rate.name),
               str(cfg.inbox / "jw01234001001_02101_00008_nrcb1_uncal.fits"),
               str(cfg.products / "01001" / "001" / "jw01001001001_02101_00008_nrcb1_rate.fits"),
               uncal[0].name, outside_rate.name, str(cfg.inbox), str(cfg.products), "/etc/passwd",
               str(cfg.products / "namespaces" / "ctx1" / "01001" / "001" / outside_rate.name),
               str(uncal[1]), orders[-1]["inputs"][0]["path"]]
    # Paths no file can have: a lookup raises instead of finding nothing.
    hostile += [f"{root}/{sub}{name}" for root, name in ((cfg.inbox, uncal[0].name),
                                                        (cfg.products, outside_rate.name))
                for sub in ("a\x00b/", "a" * 256 + "/", ("a" * 200 + "/") * 21, "loop/",
                            "\udc80/", "\ud800/")]
    world = World(tmp, cfg, runner, producer, pool, hostile)
    world.arrivals = [_arrival(p) for p in uncal]
    world.arrivals += [_replayed(a, "raw", n) for n, a in enumerate(world.arrivals)]
    world.orders = orders + [_replayed(o, o["stage"], n) for n, o in enumerate(orders[:6])]
    return world


def _spots(obj, prefix=()):
    """Every place in a message, to a depth a real one has (a forged nesting is not walked)."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) \
        else ()
    if len(prefix) > 12:
        return
    for k, v in items:
        yield prefix + (k,)
        yield from _spots(v, prefix + (k,))


def _set(body: dict, spot: tuple, value) -> None:
    parent = body
    for k in spot[:-1]:
        parent = parent[k]
    parent[spot[-1]] = value


def _mutated(body: dict, rng: random.Random, world: World) -> dict:
    body = copy.deepcopy(body)
    spots = [s for s in _spots(body) if s[0] not in ("schema", "schema_version")]
    paths = [s for s in spots if s[-1] in ("path", "expname")]
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        how = rng.random()
        if how < 0.3 and paths:  # a path to somewhere else, in the message's one place or all
            value = rng.choice(world.hostile_paths)
            spot = rng.choice(paths)
            same = [s for s in paths if _get(body, s) == _get(body, spot)]
            for s in same if rng.random() < 0.7 else [spot]:
                _set(body, s, value)
        elif how < 0.45:  # a key added, or replaced, anywhere there is an object
            holders = [()] + [s for s in spots if isinstance(_get(body, s), dict)]
            _set(body, rng.choice(holders) + (rng.choice(KEYS),), _weird(rng))
        elif how < 0.55:  # a key removed
            spot = rng.choice(spots)
            parent = _get(body, spot[:-1])
            if isinstance(parent, dict):
                del parent[spot[-1]]
        elif how < 0.6:
            _set(body, rng.choice(spots), _nested(rng.choice([20, 40, 300])))
        elif how < 0.65:  # a count, a size or a version beyond any real one
            numbers = [s for s in spots if type(_get(body, s)) is int]
            if numbers:
                _set(body, rng.choice(numbers), rng.choice([0, -1, 10**18, 10**29, -10**29]))
        elif how < 0.7:  # another content than the file's: stale, or a claim refused
            digests = [s for s in spots if s[-1] == "digest"]
            if digests:
                _set(body, rng.choice(digests), "sha256:" + f"{rng.randrange(16):x}" * 64)
        elif how < 0.8:  # a real name made a little wrong: where a regex may not look
            texts = [s for s in spots if isinstance(_get(body, s), str)]
            if texts:
                spot = rng.choice(texts)
                _set(body, spot, rng.choice(["{}\n", "../{}", "{}/..", "{}/x", ".{}", "{} ",
                                             "{}\x00"]).format(_get(body, spot)))
        else:
            _set(body, rng.choice(spots), _weird(rng))
        spots = [s for s in _spots(body) if s[0] not in ("schema", "schema_version")]
        paths = [s for s in spots if s[-1] in ("path", "expname")]
    return body


def _weird(rng: random.Random):
    return copy.deepcopy(rng.choice(WEIRD))  # a copy: mutated later, it must not change WEIRD


def _get(body, spot):
    for k in spot:
        body = body[k]
    return body


def _record(stage_name: str, body: dict, replay: bool, offset: int,
            raw: bytes | None = None) -> ConsumerRecord:
    """``raw``: the value's bytes as sent (a door fuzz's mutant), else ``body`` written."""
    st = stage(stage_name)
    value = json.dumps(body).encode() if raw is None else raw
    key = str(body.get("exposure_id") or body.get("product_name"))[:100].encode()
    return ConsumerRecord(f"calstream.{st.replay_topic if replay else st.live_topic}", 0, offset,
                          0, 0, key, value, None, len(key), len(value), [])


def _inside(path, root) -> bool:
    return Path(path).resolve().is_relative_to(Path(root).resolve())


async def _handle(world: World, stage_name: str, body: dict, replay: bool, offset: int,
                  raw: bytes | None = None, configured: bool = False) -> str:
    """One record through the admitter: "invalid", "refused", "stale" or "run".
    ``configured``: the world's configuration sets step parameters."""
    runner, producer, pool = world.runner, world.producer, world.pool
    sent, items = len(producer.sent), len(runner.items)
    dirs, written, cwds = len(pool.output_dirs), len(pool.written), len(pool.cwds)
    with anyio.fail_after(10):
        await world.admitter(stage_name).handle(_record(stage_name, body, replay, offset, raw))
    new = producer.sent[sent:]
    dead = [m for topic, m in new if topic.endswith("deadletter")]
    if len(runner.items) == items:
        if not new:
            return "stale"
        assert len(dead) == 1 and dead[0]["reason"] and len(new) == 1, new
        # A refusal says why: the admitter's catch-all is for what no rule foresaw.
        assert not dead[0]["reason"].startswith("cannot admit this record"), dead[0]["reason"]
        assert dead[0]["category"] in ("invalid_message", "bad_input")
        return "invalid" if dead[0]["category"] == "invalid_message" else "refused"
    (item,) = runner.items[items:]
    if item.stage in ("stage2", "stage3") and not configured:
        # Nothing is configured here: whatever steps a message asks for, the
        # run is given none (deciders/order_parameters.py).
        assert item.task_kwargs["steps"] == {} and "steps" not in item.parameters, body
    products = world.cfg.products
    roots = world.cfg.allowed_roots if item.stage in ("detector1", "dark", "guider") \
        else [products]
    for i in item.inputs:
        assert any(_inside(i["path"], r) for r in roots), (i, body)
    for product in item.task_kwargs.get("association", {}).get("products", []):
        for m in product["members"]:
            assert _inside(m["expname"], products), (m, body)
    store = runner.store.for_namespace(item.namespace)
    assert _inside(store.root, products)
    assert _inside(store.log_path(item.program, item.observation, item.name, item.stage,
                                  item.version), store.root)
    for out in pool.output_dirs[dirs:]:
        assert _inside(out, store.root), (out, body)
    for path in pool.written[written:]:
        assert any(_inside(path, out) for out in pool.output_dirs[dirs:]), (path, body)
    assert all(_inside(cwd, products) for cwd in pool.cwds[cwds:]), body
    for _, m in new:
        for out in m.get("outputs") or []:
            assert _inside(out["path"], store.root), (out, body)
    return "run"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


async def _fuzz(world: World, seed: int, cases: int) -> dict[str, int]:
    rng = random.Random(seed)
    elsewhere = _files(world.tmp / "elsewhere")
    counts: dict[str, int] = {}
    messages = [("detector1", a) for a in world.arrivals] + \
        [(o["stage"], o) for o in world.orders]
    for offset in range(cases):
        stage_name, body = rng.choice(messages)
        # One in eight as it came: what the forged records meet has run before.
        forged = _mutated(body, rng, world) if offset % 8 else body
        # The stage the forger says, or another's; the live topic or the replay one.
        if rng.random() < 0.1:
            stage_name = rng.choice(["detector1", "stage2", "stage3"])
        replay = bool(body.get("replay")) if rng.random() < 0.8 else rng.random() < 0.5
        outcome = await _handle(world, stage_name, forged, replay, offset)
        if forged is not body:
            counts[outcome] = counts.get(outcome, 0) + 1
    assert _files(world.tmp / "elsewhere") == elsewhere  # nothing written outside the roots
    stray = [p for p in world.tmp.rglob("*") if p.is_file() and not any(
        p.is_relative_to(r) for r in (world.cfg.inbox, world.cfg.products, world.tmp / "elsewhere"))]
    assert stray == []
    return counts


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_crds_cache(monkeypatch):
    """The admission asks a server-less CRDS cache whether it has a replay's
    context (record_admitter.py): these worlds have none, whatever cache a
    session fixture of the same process has put in the environment."""
    monkeypatch.delenv("CRDS_PATH", raising=False)


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(4))
async def test_a_forged_record_is_refused_or_runs_inside_its_roots(tmp_path, seed):
    world = _world(tmp_path)
    counts = await _fuzz(world, seed, 400)
    # Forged records took every way (of 350 a seed, about 135 invalid, 115
    # refused, 85 run, 15 stale): not a test that cannot fail.
    assert counts["run"] > 50 and counts["refused"] > 50, counts
    assert counts["invalid"] > 50 and counts["stale"] > 5, counts


@pytest.mark.anyio
async def test_the_messages_as_made_are_run(tmp_path):
    world = _world(tmp_path)
    for n, body in enumerate(world.arrivals):
        assert await _handle(world, "detector1", body, bool(body.get("replay")), n) == "run"
    for n, body in enumerate(world.orders):
        assert await _handle(world, body["stage"], body, bool(body.get("replay")), n) == "run"



def _first_step(pipeline: str) -> str:
    from calstream.steps.pipeline_catalog import catalog

    return next(iter(catalog()[pipeline]["steps"]))


# Step parameters stpipe would honour that no configuration gives: a hook runs
# a command or a function after the step (a forged order made a worker run a
# shell command); output_dir, suffix and the like put products outside the store.
NEVER_CONFIGURED = {
    "a hook running a shell command": lambda s, out: {s: {"post_hooks": [f"touch {out}/hooked"]}},
    "a hook naming a function": lambda s, out: {s: {"pre_hooks": ["os.system"]}},
    "products written elsewhere": lambda s, out: {s: {"output_dir": str(out),
                                                      "save_results": True}},
    "a suffix climbing out": lambda s, out: {s: {"suffix": "../../../x", "save_results": True}},
    "a step the pipeline does not have": lambda s, out: {"no_such_step": {"skip": True}},
    "a parameter the step does not have": lambda s, out: {s: {"no_such_parameter": 1}},
    "a value of the wrong type": lambda s, out: {s: {"skip": "yes"}},
}  # (steps or a step that is no table: the contract's schema refuses them)


@pytest.mark.anyio
@pytest.mark.parametrize("how", NEVER_CONFIGURED)
async def test_a_work_order_asking_for_step_parameters_no_configuration_gives_is_refused(
        tmp_path, how):
    world = _world(tmp_path)
    elsewhere = world.tmp / "elsewhere"
    for n, order in enumerate(world.orders):
        steps = NEVER_CONFIGURED[how](_first_step(order["pipeline"]), elsewhere)
        forged = copy.deepcopy(order)
        forged["parameters"] = {**forged.get("parameters", {}), "steps": steps}
        sent = len(world.producer.sent)
        outcome = await _handle(world, order["stage"], forged, bool(order.get("replay")), n)
        assert outcome == "refused", (how, order["stage"])
        [(_, letter)] = world.producer.sent[sent:]
        assert "step parameters no configuration gives" in letter["reason"], letter["reason"]
    assert not (elsewhere / "hooked").exists()


@pytest.mark.anyio
async def test_a_work_order_runs_with_its_stage_s_configured_step_parameters(tmp_path, caplog):
    world = _world(tmp_path)
    # Well-formed parameters other than the configuration's: an order planned
    # under an earlier configuration, replayed, or by a planner whose
    # configuration was rolled out first. The run takes this daemon's.
    for n, order in enumerate(world.orders):
        asked = {_first_step(order["pipeline"]): {"skip": True}}
        forged = dict(order, parameters={**order.get("parameters", {}), "steps": asked})
        assert await _handle(world, order["stage"], forged, bool(order.get("replay")), n) == "run"
        assert world.runner.items[-1].task_kwargs["steps"] == {}
    assert caplog.text.count("running it with the configured ones") == len(world.orders)
    # A line about an exposure names it, as every such line does (docs/operations.md, "Logs").
    warned = [r for r in caplog.records if "running it with the configured ones" in r.getMessage()]
    assert sorted(r.exposure_id for r in warned) == sorted(
        o.get("exposure_id") or o["product_name"] for o in world.orders)
    assert f"({_first_step(world.orders[0]['pipeline'])}.skip)" in caplog.text

    # A stage configured otherwise than the planner that made the orders.
    world.cfg = load(None, env={"CALSTREAM_STEPS": "{calwebb_image2 = {resample = {skip = true}}}"},
                     flags={"work_dir": world.tmp / "work"})
    image2 = [o for o in world.orders if o["pipeline"] == "calwebb_image2"]
    assert image2
    for n, order in enumerate(image2):
        offset = 1000 + n
        assert await _handle(world, order["stage"], order, bool(order.get("replay")), offset,
                             configured=True) == "run"
        item = world.runner.items[-1]
        assert item.task_kwargs["steps"] == {"resample": {"skip": True}}
        # What the run is given is what its work id and product event say.
        assert item.parameters["steps"] == item.task_kwargs["steps"]


@pytest.mark.anyio
async def test_a_replay_naming_a_context_the_server_less_cache_lacks_is_refused(
        tmp_path, monkeypatch):
    # Taken for CRDS being down, such an item was parked and run again every
    # half minute, forever: a cache without a server never gets a mapping by itself.
    world = _world(tmp_path)
    cache = tmp_path / "crds"
    (cache / "mappings" / "jwst").mkdir(parents=True)
    (cache / "mappings" / "jwst" / "jwst_0001.pmap").write_text("header = {}\n")
    monkeypatch.setenv("CRDS_PATH", str(cache))
    monkeypatch.setenv("CRDS_MODE", "local")
    replayed = [("detector1", a) for a in world.arrivals if a.get("replay")] + \
        [(o["stage"], o) for o in world.orders if o.get("replay")]
    assert {m["replay"]["crds_context"] for _, m in replayed} == {"jwst_0002.pmap"}
    for n, (stage_name, body) in enumerate(replayed):
        sent = len(world.producer.sent)
        assert await _handle(world, stage_name, body, True, n) == "refused"
        [(_, letter)] = world.producer.sent[sent:]
        assert letter["reason"].startswith(
            f"CRDS context jwst_0002.pmap is not in the CRDS cache {cache}, and CRDS is "
            "server-less here"), letter["reason"]
        assert "the cache has jwst_0001.pmap" in letter["reason"]
    # Once the cache has it (an operator synced it), the same records run.
    (cache / "mappings" / "jwst" / "jwst_0002.pmap").write_text("header = {}\n")
    for n, (stage_name, body) in enumerate(replayed):
        assert await _handle(world, stage_name, body, True, 100 + n) == "run"
    # With a server, crds fetches what its cache lacks: nothing to judge before a run.
    (cache / "mappings" / "jwst" / "jwst_0002.pmap").unlink()
    monkeypatch.setenv("CRDS_MODE", "auto")
    monkeypatch.setenv("CRDS_SERVER_URL", "https://jwst-crds.stsci.edu")
    for n, (stage_name, body) in enumerate(replayed):
        assert await _handle(world, stage_name, body, True, 200 + n) == "run"


@pytest.mark.anyio
async def test_a_work_order_never_writes_another_product_s_files(tmp_path):
    # jwst names a run's products after its association's product, and the
    # store moves them over whatever has that name: a forged stage-2 order
    # of one exposure whose association named another replaced the other's
    # product (before: run, the other's file replaced by this one's).
    world = _world(tmp_path)
    live2 = [o for o in world.orders if o["stage"] == "stage2" and not o.get("replay")]
    victim, forger = live2[0], next(o for o in live2[1:] if o["program"] == live2[0]["program"])
    assert await _handle(world, "stage2", victim, False, 0) == "run"
    [made] = [p for p in world.pool.written if p.name == f"{victim['product_name']}_fuzz.fits"]
    kept = Path(world.runner.store.directory(victim["program"], victim["observation"])) / made.name
    before = os.stat(kept)
    forged = copy.deepcopy(forger)
    forged["association"]["products"][0]["name"] = victim["product_name"]
    forged["association_path"] = victim["association_path"]  # its own file name too
    sent = len(world.producer.sent)
    assert await _handle(world, "stage2", forged, False, 1) == "refused"
    [(_, letter)] = world.producer.sent[sent:]
    assert "not an association the planner makes" in letter["reason"], letter["reason"]
    after = os.stat(kept)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # The same order with every name its own is its exposure's run.
    assert await _handle(world, "stage2", forger, False, 2) == "run"
    # A stage-3 order's products are named after its association's product too.
    order3 = next(o for o in world.orders if o["stage"] == "stage3" and not o.get("replay"))
    forged = copy.deepcopy(order3)
    name = order3["product_name"]
    forged["association"]["products"][0]["name"] = name[:name.index("_") + 1] + "t999_x"
    assert await _handle(world, "stage3", forged, False, 3) == "refused"
    assert "are not the order's product" in world.producer.sent[-1][1]["reason"]


def _as_fits(order: dict) -> dict:
    """``order`` with its science member made a FITS file whose primary
    header has the order's copy, as jwst writes a rate file (its digest and
    size now the file's)."""
    from astropy.io import fits

    order = copy.deepcopy(order)
    [path] = [m["expname"] for p in order["association"]["products"] for m in p["members"]
              if m["exptype"] == "science"]
    fits.PrimaryHDU(header=fits.Header(list(order["header"].items()))).writeto(
        path, overwrite=True)
    for item in order["inputs"]:
        if item["path"] == path:
            item["digest"], item["size"] = file_digest(path), os.path.getsize(path)
    return order


@pytest.mark.anyio
async def test_a_stage_2_order_s_header_copy_is_its_science_file_s_own(tmp_path):
    # The product event carries the exposure's header, and the planner's
    # stage-3 decisions read it (the candidate an exposure joins): before, a
    # forged copy saying another FILTER ran, and its event put the exposure
    # into another mosaic.
    world = _world(tmp_path)
    order = _as_fits(next(o for o in world.orders if o["stage"] == "stage2"
                          and o["pipeline"] == "calwebb_image2" and not o.get("replay")))
    header = order["header"]
    other_filter = "F444W" if header["FILTER"] != "F444W" else "F150W"
    forged = {
        "another filter": dict(order, header={**header, "FILTER": other_filter}),
        "a keyword the file lacks": dict(order, header={**header, "TARGETID": 7}),
        "another count": dict(order, header={**header, "NEXPOSUR": header["NEXPOSUR"] + 1}),
        "another exp_type": dict(order, exp_type="NRC_CORON"),
    }
    for n, (how, body) in enumerate(forged.items()):
        sent = len(world.producer.sent)
        assert await _handle(world, "stage2", body, False, n) == "invalid", how
        [(_, letter)] = world.producer.sent[sent:]
        assert letter["reason"].startswith("the order's header copy is not its science "
                                           "file's own"), (how, letter["reason"])
    # A copy leaving a keyword out runs, and its product event carries the file's.
    short = dict(order, header={k: v for k, v in header.items() if k != "FILTER"})
    sent = len(world.producer.sent)
    assert await _handle(world, "stage2", short, False, 10) == "run"
    [event] = [m for topic, m in world.producer.sent[sent:] if topic.endswith("products")]
    assert event["header"] == header


@pytest.mark.anyio
async def test_a_work_order_runs_with_the_context_of_its_replay_or_the_daemon_s(tmp_path):
    # The planner's live orders name no CRDS context (the daemon's pinned one
    # decides), a replay's name its replay's. Before, a forged live order
    # naming another context ran with it: a live product calibrated with a
    # context no operator chose, over the live files.
    world = _world(tmp_path)
    live = [o for o in world.orders if not o.get("replay")]
    replayed = [o for o in world.orders if o.get("replay")]
    assert live and replayed
    for n, order in enumerate(live):
        forged = dict(order, crds_context="jwst_0002.pmap")
        assert await _handle(world, order["stage"], forged, False, n) == "refused"
        assert "is not its replay's" in world.producer.sent[-1][1]["reason"]
    for n, order in enumerate(replayed):
        forged = dict(order, crds_context="jwst_0003.pmap")  # its replay's is jwst_0002.pmap
        assert await _handle(world, order["stage"], forged, True, 100 + n) == "refused"
    for n, order in enumerate(live + replayed):  # as made: run with the context they name
        assert await _handle(world, order["stage"], order, bool(order.get("replay")),
                             200 + n) == "run"
        assert world.runner.items[-1].crds_context == (order.get("replay") or {}).get(
            "crds_context")


@pytest.mark.anyio
async def test_pointing_corrections_rewrite_only_a_held_input_its_release_corrects(tmp_path):
    # A stage-2 run applies the order's pointing corrections to a copy of a
    # member (steps/association_run.py): its WCS is the order's from then on.
    # The planner puts one there only for a PLANNED member released by that
    # correction. Before, a forged order rewrote the pointing of any
    # exposure, one whose own header says CALCULATED too.
    from .planner_stream import CORRECT

    world = _world(tmp_path)
    order = _as_fits(next(o for o in world.orders if o["stage"] == "stage2"
                          and o["pipeline"] == "calwebb_image2" and not o.get("replay")
                          and not o.get("releases")))
    assert order["header"]["ENGQLPTG"].startswith("CALCULATED")
    [rate] = [i["path"] for i in order["inputs"] if i["role"] == "science"]
    eid, name = order["exposure_id"], Path(rate).name
    keywords = {**CORRECT, "RA_REF": 10.0}
    release = {"path": "pointing", "keywords": keywords, "reason": "forged", "by": None,
               "at": "2026-01-01T00:00:00Z", "digest": order["inputs"][0]["digest"]}
    fix = {"keywords": keywords, "note": "forged"}

    def forged(corrections, releases):
        return dict(order, releases=releases, parameters={
            **order.get("parameters", {}), "pointing_corrections": corrections})

    cases = {
        "an input whose own header is not PLANNED": forged({name: fix}, {eid: release}),
        "no release carrying it": forged({name: fix}, None),
        "another correction than its release's": forged(
            {name: {**fix, "keywords": {**keywords, "RA_REF": 11.0}}}, {eid: release}),
        "no input of the order": forged({"jw01001001001_02101_00007_nrcb1_rate.fits": fix},
                                        {eid: release}),
    }
    for n, (how, body) in enumerate(cases.items()):
        sent = len(world.producer.sent)
        assert await _handle(world, "stage2", body, False, n) == "refused", how
        [(_, letter)] = world.producer.sent[sent:]
        assert "pointing correction" in letter["reason"], (how, letter["reason"])
    # The planner's corrected orders run, with their corrections.
    corrected = [o for o in world.orders if (o.get("parameters") or {}).get(
        "pointing_corrections")]
    assert corrected
    for n, body in enumerate(corrected):
        assert await _handle(world, body["stage"], body, bool(body.get("replay")), 10 + n) == "run"
        assert world.runner.items[-1].task_kwargs["corrections"]
        # The same with a declination no pointing update may carry, in both places.
        impossible = copy.deepcopy(body)
        for fix in impossible["parameters"]["pointing_corrections"].values():
            fix["keywords"]["DEC_V1"] = 95.0
        for release in impossible["releases"].values():
            if release.get("keywords"):
                release["keywords"]["DEC_V1"] = 95.0
        assert await _handle(world, body["stage"], impossible, bool(body.get("replay")),
                             20 + n) == "refused"
        assert "keywords no pointing update could carry" in world.producer.sent[-1][1]["reason"]


@pytest.mark.anyio
async def test_a_stage_2_order_over_the_dead_letter_budget_is_still_named_by_its_letter(
        tmp_path, monkeypatch):
    # Its original is cut at 64 KiB in its dead letter, and the planner,
    # which reads a stage-2 failure from the order, ignored it: the member
    # waited stage3_stage2_wait (6 h) for a run that had failed. The letter
    # keeps the order's identity whole beside it (topics/dead_letters.py).
    from calstream.daemon.deciders.stage2_failures import stage2_failure
    from calstream.daemon.doers.worker_pool import TaskOutcome
    from calstream.daemon.doers.worker_process import TaskFailure

    world = _world(tmp_path)
    order = _as_fits(next(o for o in world.orders if o["stage"] == "stage2"
                          and o["pipeline"] == "calwebb_image2" and not o.get("replay")))
    stage2 = {"calstream.work.stage2"}
    refused = dict(order, header={**order["header"], "TARGNAME": "x" * 70_000})
    sent = len(world.producer.sent)
    assert await _handle(world, "stage2", refused, False, 0) == "invalid"
    [(_, letter)] = world.producer.sent[sent:]
    assert letter["original"]["value_truncated"]
    failure = stage2_failure(contract.encode(letter), stage2)
    assert failure is not None and (failure.work_id, failure.exposure_id) == (
        order["work_id"], order["product_name"])

    async def fails(*args, **kwargs):
        return TaskOutcome(failure=TaskFailure("ValueError", "boom", "permanent"))

    monkeypatch.setattr(world.pool, "run", fails)
    big = dict(order, parameters={**order.get("parameters", {}), "annotation": "y" * 70_000})
    sent = len(world.producer.sent)
    await world.admitter("stage2").handle(_record("stage2", big, False, 1))
    [letter] = [m for topic, m in world.producer.sent[sent:] if topic.endswith("deadletter")]
    assert letter["category"] == "permanent_failure" and letter["original"]["value_truncated"]
    failure = stage2_failure(contract.encode(letter), stage2)
    assert failure is not None and failure.work_id == order["work_id"]


@pytest.mark.anyio
async def test_an_arrival_naming_a_path_of_980_kb_gets_a_dead_letter_that_fits(tmp_path):
    # Its dead letter named the path whole beside its 64 KiB original: over
    # the size every reader takes, the contract refused the letter, and the
    # consumer took the InvalidMessage for a broker fault and retried the
    # record for ever, its partition stopped (topics/dead_letters.letter_fields).
    from calstream.topics import dead_letters

    world = _world(tmp_path)
    path = f"{world.cfg.inbox}/" + "a/" * 492_000 + "x_uncal.fits"  # the arrival: under 1 MB
    assert await _handle(world, "detector1", dict(world.arrivals[0], path=path), False, 0) \
        == "refused"
    [(_, letter)] = world.producer.sent[-1:]
    assert letter["path"] == dead_letters.bounded(path, dead_letters.TEXT_BUDGET)
    assert letter["original"]["value_truncated"]
