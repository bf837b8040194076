"""Detector1 -> planner -> stage 2 on the real embedded broker with the real pipelines.

(Imaging, a time series and MIRI LRS nods to their stage-2 products: in
test_fidelity, whose daemon run calibrates them all; the LRS nods without a
plan, in test_stage3.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest
from astropy.io import fits

from calstream.steps.fitsfile import file_digest
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.program import ProgramSpec, simulate_program
from calstream.topics import contract

from .support import UP_TO_STAGE2, daemon_config, products, read_all, running_daemon, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def eid(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


def holds(messages) -> list[contract.Message]:
    return [m for m in messages if isinstance(m, contract.Message) and m.type == "hold"]


def load_association(path: str):
    from jwst.associations import load_asn

    with open(path) as f:
        return load_asn(f)


async def test_a_dithered_visit_reaches_image2_and_a_planned_exposure_waits_across_a_restart(
        tmp_path, broker, kit, unique_prefix):
    spec = dataclasses.replace(ProgramSpec(), planned=(3,))
    files = simulate_program(tmp_path / "uncal", spec, seed=7)
    corrected = next(f for f in simulate_program(tmp_path / "corrected", ProgramSpec(), seed=7)
                     if eid(f) == eid(files[2]))
    planned_id = eid(files[2])
    others = {eid(f) for f in files} - {planned_id}
    cfg = daemon_config(tmp_path, broker, unique_prefix, workers=1, roles=UP_TO_STAGE2)

    def stage2_done(ids):
        return lambda ms: {p["exposure_id"] for p in products(ms, "stage2")} >= ids

    def orders(ms):
        return [m for m in ms if isinstance(m, contract.Message) and m.type == "work_order"]

    async with running_daemon(cfg):
        await anyio.to_thread.run_sync(lambda: deliver(files, cfg.inbox))
        first = await wait_for(cfg, ["products", "holds"], lambda ms: stage2_done(others)(ms)
                               and {p["exposure_id"] for p in products(ms)} >= others | {planned_id}
                               and holds(ms), timeout=300)
        # The held exposure: its quick-look rate exists, nothing past detector1.
        assert planned_id not in {p["exposure_id"] for p in products(first, "stage2")}
        [hold] = holds(first)
        assert hold["exposure_id"] == planned_id and hold["state"] == "held"
        quicklook = next(p for p in products(first) if p["exposure_id"] == planned_id)
        assert quicklook["pointing_provisional"] is True
    before = await read_all(cfg, ["work.stage2", "holds"])
    assert sorted(o["product_name"] for o in orders(before)) == sorted(others)
    # The whole daemon again: the planner rebuilds from the topics, the hold kept.
    async with running_daemon(cfg) as daemon:
        with anyio.fail_after(60):
            while not (daemon.planner and daemon.planner.caught_up):
                await anyio.sleep(0.2)
        assert daemon.planner.state.summary(0)["held"] == 1
        await anyio.to_thread.run_sync(lambda: deliver([corrected], cfg.inbox))
        final = await wait_for(cfg, ["products", "holds", "work.stage2"],
                               stage2_done(others | {planned_id}), timeout=300)
    # Nothing ordered twice.
    assert sorted(o["product_name"] for o in orders(final)) == sorted(others | {planned_id})
    assert [h["state"] for h in holds(final)] == ["held", "released"]
    released = holds(final)[-1]
    assert released["state"] == "released" and released["release"]["path"] == "redelivery"
    planned_rates = {o["digest"] for p in products(final) if p["pointing_provisional"]
                     for o in p["outputs"]}
    stage2 = {p["exposure_id"]: p for p in products(final, "stage2")}
    assert set(stage2) == others | {planned_id}
    for exposure, event in stage2.items():
        assert event["pipeline"] == "calwebb_image2" and event["outcome"] == "success"
        assert not planned_rates & {i["digest"] for i in event["inputs"]}, \
            f"{exposure}: stage 2 built from a PLANNED rate file"
        outputs = {o["suffix"]: o for o in event["outputs"]}
        assert {"cal", "i2d", "asn"} <= set(outputs)
        for o in outputs.values():
            assert file_digest(o["path"]) == o["digest"]
        asn = load_association(outputs["asn"]["path"])
        members = asn["products"][0]["members"]
        assert [m["exptype"] for m in members] == ["science"]
        assert Path(members[0]["expname"]).name == f"{exposure}_rate.fits"
        with fits.open(outputs["cal"]["path"]) as hdul:
            assert hdul[0].header["ENGQLPTG"].startswith("CALCULATED")
            assert hdul["SCI"].header["CTYPE1"].startswith("RA")  # a WCS was assigned
        assert event["arrived_at"] is not None
