"""What the mutation fuzz of the stage consumers' records found
(test_forged_work_records.py), each case as it was found: a record that
raised out of the handler (which the consumer retries forever), ran a
pipeline whose product could never be announced, or named files with a
newline."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from calstream.daemon.doers.product_store import ProductStore

from .test_forged_work_records import World, _handle, _no_crds_cache, _set, _world  # noqa: F401 (autouse)


@pytest.fixture
def anyio_backend():
    return "asyncio"

def _order(world: World, stage_name: str = "stage2") -> dict:
    return copy.deepcopy(next(o for o in world.orders
                              if o["stage"] == stage_name and not o.get("replay")))


@pytest.mark.anyio
@pytest.mark.parametrize("field_name,value", [
    ("exp_type", {}), ("visit", [["x"]]), ("header", "001"), ("instrument", 5),
    ("pointing_quality", 5), ("pointing_provisional", "yes"), ("exposure_id", " "),
    ("inputs/0/size", "10"), ("inputs/0/role", 1)])
async def test_an_order_whose_product_event_could_not_be_written_is_never_run(
        tmp_path, field_name, value):
    """The fields a product event copies from its order had no types in the
    order's schema: the run went ahead, and its product event then failed
    the contract -- an exception out of the handler, which the consumer
    retries forever, running the pipeline again each time."""
    world = _world(tmp_path)
    order = _order(world)
    _set(order, tuple(int(k) if k.isdigit() else k for k in field_name.split("/")), value)
    assert await _handle(world, "stage2", order, False, 1) == "invalid"
    assert world.runner.items == [] and world.pool.output_dirs == []


@pytest.mark.anyio
async def test_a_refused_order_with_a_forged_exposure_id_still_gets_its_dead_letter(tmp_path):
    """The dead letter of a refused order names its exposure id: an object
    there failed the dead letter's own schema, out of the handler."""
    world = _world(tmp_path)
    order = {**_order(world), "pipeline": "calwebb_evil", "exposure_id": {"a": 1}}
    assert await _handle(world, "stage2", order, False, 1) == "invalid"


@pytest.mark.anyio
async def test_a_replay_names_a_crds_context_not_a_path(tmp_path):
    """A replay's context becomes the run's CRDS_CONTEXT and its product's
    crds_context: "../../x.pmap" ended in .pmap, so it was run."""
    from calstream.daemon.deciders.admission import replay_problem

    world = _world(tmp_path)
    arrival = copy.deepcopy(next(a for a in world.arrivals if a.get("replay")))
    arrival["replay"]["crds_context"] = "../../x.pmap"
    assert await _handle(world, "detector1", arrival, True, 1) == "refused"
    assert world.runner.items == []
    assert "CRDS context" in world.producer.sent[-1][1]["reason"]
    for bad in ("../../x.pmap", "jwst_0002.pmap\n", "JWST.pmap", "x" * 41 + ".pmap"):
        assert replay_problem({"namespace": "ctx1", "crds_context": bad}), bad
    assert replay_problem({"namespace": "ctx1", "crds_context": "jwst_0002.pmap"}) is None


@pytest.mark.anyio
async def test_a_huge_version_is_run_without_counting_down_to_it(tmp_path, monkeypatch):
    """The newest earlier version was looked for by counting down from the
    order's version: 10**5 took 15 s, 10**18 never ended (in a thread, out of
    reach of any timeout, its partition stuck)."""
    world = _world(tmp_path)
    order = {**_order(world, "stage3"), "version": 10**18}
    lookups = []
    real = ProductStore.lookup

    def lookup(self, *args, **kwargs):
        lookups.append(kwargs.get("version"))
        assert len(lookups) < 100, "counting down"
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ProductStore, "lookup", lookup)
    assert await _handle(world, "stage3", order, False, 1) == "run"
    assert 1 in lookups and max(lookups) == 10**18


@pytest.mark.anyio
async def test_names_with_a_final_newline_are_refused(tmp_path):
    """Python's "$" also matches before a final newline: the reference
    validator (unlike jsonschema-rs, and JSON Schema) let "jw...\\n" through as
    a product name or exposure id, and the association's names passed the
    admission's own regex; files and logs were named with a newline."""
    from calstream.daemon.deciders.namespaces import BadNamespace, check_namespace

    world = _world(tmp_path)
    arrival = {**world.arrivals[0], "exposure_id": world.arrivals[0]["exposure_id"] + "\n"}
    assert await _handle(world, "detector1", arrival, False, 1) == "invalid"
    order = _order(world)
    assert await _handle(world, "stage2", {**order, "product_name": order["product_name"] + "\n"},
                         False, 2) == "invalid"
    order["association"]["asn_id"] += "\n"
    assert await _handle(world, "stage2", order, False, 3) == "refused"
    assert "cannot be file names" in world.producer.sent[-1][1]["reason"]
    assert world.runner.items == []
    with pytest.raises(BadNamespace):
        check_namespace("ctx1\n")


@pytest.mark.anyio
@pytest.mark.parametrize("part,reason", [
    ("a\x00b/", "NUL byte"), ("a" * 256 + "/", "name of 256 bytes"),
    (("a" * 200 + "/") * 21, "longer than the file system allows (4095)"),
    ("loop/", "symbolic links loop"), ("\ud800/", "lone surrogate")])
async def test_a_path_no_file_can_have_is_refused_by_a_rule(tmp_path, part, reason):
    """A NUL, a name over NAME_MAX, a path over PATH_MAX, a loop of links:
    looking the path up raised, and the record reached the admitter's
    catch-all ("cannot admit this record", a traceback in the log)."""
    world = _world(tmp_path)  # its roots hold a loop of links, "loop" and "loop2"
    arrival = copy.deepcopy(world.arrivals[0])
    arrival["path"] = f"{world.cfg.inbox}/{part}{Path(arrival['path']).name}"
    order = _order(world)
    old = order["inputs"][0]["path"]
    new = f"{world.cfg.products}/{part}{Path(old).name}"
    order = json.loads(json.dumps(order).replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1]))
    assert order["inputs"][0]["path"] == new
    for n, (stage_name, body) in enumerate([("detector1", arrival), ("stage2", order)]):
        assert await _handle(world, stage_name, body, False, n) == "refused"
        assert reason in world.producer.sent[-1][1]["reason"]
    assert world.runner.items == []


@pytest.mark.anyio
@pytest.mark.parametrize("link", ["namespaces/ctx1", "02002/001/.logs"])
async def test_an_order_whose_store_directory_is_a_link_is_refused(tmp_path, link):
    """A namespace's tree made a link out of the store took a replay's writes
    along; a directory of a live observation made one reached the
    admitter's catch-all (an OutsideRoot traceback). Both are refused,
    saying so, and nothing is run."""
    world = _world(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    where = world.cfg.products / link
    where.parent.mkdir(parents=True, exist_ok=True)
    where.symlink_to(out, target_is_directory=True)
    replays = link.startswith("namespaces")
    orders = [o for o in world.orders if bool(o.get("replay")) == replays
              and (replays or o["program"] == "02002")]
    assert len(orders) >= 3
    for n, order in enumerate(orders):
        assert await _handle(world, order["stage"], order, replays, n) == "refused"
        assert "symbolic link" in world.producer.sent[-1][1]["reason"]
    assert world.runner.items == [] and list(out.iterdir()) == []
