"""The NIRISS WFSS chain through the daemon, on the real embedded broker with the
real jwst pipelines: the direct image's image3 catalog and segmentation map
feed the grism image's spec2, which feeds spec3.

One daemon run (module fixture): the grism image (NIS_WFSS) arrives first and
its direct image (NIS_IMAGE) only after the planner gave up waiting
(``companion_wait``, 1 s here): the grism is *held* for its direct image (a
hold record with the reason), not sent degraded for jwst to refuse. Then the
direct image arrives; the planner orders the grism's spec2 once, when the
direct image's level-3 product (i2d, cat, segm) exists, names those files as
the association's `direct_image`, `sourcecat` and `segmap` members, and
releases the hold.

Fidelity: the same two uncal files through jwst directly (`Pipeline.call`,
tests/direct_jwst.py) on the associations `asn_generate` makes of the kit's
pool, in dependency order -- detector1, image2 and image3 of the direct
image, then spec2 of the grism with the *direct run's own* i2d, catalog and
segmentation map, then spec3 -- in the same CRDS context with the daemon's
step parameters. Every daemon product, the catalog and segmentation map
included, is compared with its direct twin (tests/fidelity_compare.py):
every data extension bit-identical, metadata only as its allow-list says.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from astropy.io import fits

from calstream.daemon.doers.product_store import ProductStore
from calstream.steps.crds_env import CRDS_VARS, refresh_crds
from calstream.steps.environment import environ
from calstream.steps.fitsfile import file_digest
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.topics import contract

from ..direct_jwst import (
    generated_associations,
    run_pipeline,
    steps_in_effect,
    write_association,
)
from ..fidelity_compare import compare_records
from .support import daemon_config, products, read_all, running_daemon, wait_for

# The module fixture (the daemon run) counts against its first test's timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

# jwst's names: the grism's level-3 product puts the blocking filter first and,
# as jwst's WFSS rules do, leaves the subarray out.
DIRECT_PRODUCT = "jw01234-o011_t001_niriss_clear-f150w-sub128"
GRISM_PRODUCT = "jw01234-o011_t001_niriss_f150w-gr150c"
STAGES = ("detector1", "stage2", "stage3")
# asn_generate's rules, in the order jwst must run them: the grism's spec2
# reads what the direct image's image3 writes.
DEPENDENCY_ORDER = ("Asn_Lv2Image", "Asn_Lv3Image", "Asn_Lv2WFSSNIS", "Asn_Lv3WFSSNIS")


def _held(messages, exposure_id: str) -> bool:
    return any(isinstance(m, contract.Message) and m.type == "hold"
               and m["exposure_id"] == exposure_id and m["state"] == "held" for m in messages)


@pytest.fixture(scope="module")
def run(tmp_path_factory, broker):
    """(kit, messages, daemon records by stage, direct-run directory, timings)."""
    root = tmp_path_factory.mktemp("wfss")
    kit = build_kit(root / "kit", seed=3, modes=("wfss",))
    direct, grism = kit.by_mode["wfss"]
    grism_id = grism.name.rsplit("_", 1)[0]
    cfg = daemon_config(root, broker, "wfss.", workers=1, stage3_settle=0.5,
                        companion_wait=1.0)
    timings: dict[str, float] = {}

    async def daemon_run():
        async with running_daemon(cfg):
            await anyio.to_thread.run_sync(lambda: deliver([grism], cfg.inbox))
            await wait_for(cfg, ["holds"], lambda ms: _held(ms, grism_id), timeout=300)
            await anyio.to_thread.run_sync(lambda: deliver([direct], cfg.inbox))
            await wait_for(cfg, ["products"], lambda ms: [
                p for p in products(ms, "stage3") if p["pipeline"] == "calwebb_spec3"],
                timeout=900)
        return await read_all(cfg, ["products", "work.stage2", "work.stage3", "holds",
                                    "deadletter"])

    # Only the kit's CRDS settings: none of the session's may leak in.
    with environ({**dict.fromkeys(CRDS_VARS), **kit.crds_env}):
        refresh_crds()
        t0 = time.perf_counter()
        messages = anyio.run(daemon_run)
        timings["daemon"] = time.perf_counter() - t0
        records: dict[str, list[dict]] = {s: [] for s in STAGES}
        for record in ProductStore(cfg.products).records():
            records[record["event"]["stage"]].append(record)
        out = root / "direct"
        out.mkdir()
        t0, cpu0 = time.perf_counter(), time.process_time()
        _direct_runs(kit, records, out)
        timings["direct runs"], timings["direct runs (CPU)"] = (
            time.perf_counter() - t0, time.process_time() - cpu0)
        yield kit, messages, records, out, timings
    print("\n" + "\n".join(f"  {k}: {v:.1f} s" for k, v in timings.items()))


def _record_for(records: list[dict], name: str) -> dict:
    [record] = [r for r in records if r["event"]["product_name"] == name]
    return record


def _direct_runs(kit, records: dict[str, list[dict]], out: Path) -> None:
    """The WFSS chain as a jwst user runs it, into ``out``, each run with the
    pipeline and steps of the daemon's record of the same product."""
    for uncal in sorted(kit.by_mode["wfss"]):
        record = _record_for(records["detector1"], uncal.name.rsplit("_", 1)[0])
        run_pipeline("calwebb_detector1", uncal, out, steps_in_effect(record))
    by_rule = {a["asn_rule"].removeprefix("candidate_"): a
               for a in generated_associations(kit.pool_path)}
    assert set(by_rule) == set(DEPENDENCY_ORDER)
    for rule in DEPENDENCY_ORDER:
        asn = by_rule[rule]
        stage = "stage3" if "Lv3" in rule else "stage2"
        record = _record_for(records[stage], asn["products"][0]["name"])
        run_pipeline(record["event"]["pipeline"], write_association(asn, out), out,
                     steps_in_effect(record))


def stage3(messages, pipeline: str):
    return [p for p in products(messages, "stage3")
            if p["outcome"] == "success" and p["pipeline"] == pipeline]


def test_the_direct_images_catalog_feeds_the_grism_spec2_then_spec3(run):
    wfss_kit, final, _, _, _ = run
    direct, grism = wfss_kit.by_mode["wfss"]
    grism_id = grism.name.rsplit("_", 1)[0]
    [image3] = stage3(final, "calwebb_image3")
    [spec3] = stage3(final, "calwebb_spec3")
    assert (image3["product_name"], spec3["product_name"]) == (DIRECT_PRODUCT, GRISM_PRODUCT)
    direct_outputs = {o["suffix"]: o["path"] for o in image3["outputs"]}
    assert {"i2d", "cat", "segm"} <= set(direct_outputs)

    # The grism's spec2: ordered once, after the direct image's stage-3 product,
    # with its i2d, catalog and segmentation map as members.
    orders = [m for m in final if isinstance(m, contract.Message) and m.type == "work_order"
              and m["stage"] == "stage2" and m["exposure_id"] == grism_id]
    assert len(orders) == 1
    assert orders[0]["emitted_at"] >= image3["emitted_at"]
    members = {m["exptype"]: m["expname"] for m in
               orders[0]["association"]["products"][0]["members"]}
    assert members == {"science": members["science"], "direct_image": direct_outputs["i2d"],
                       "sourcecat": direct_outputs["cat"], "segmap": direct_outputs["segm"]}
    assert orders[0]["association"]["asn_rule"] == "Asn_Lv2WFSSNIS"
    assert not orders[0].get("degraded")

    [spec2] = [p for p in products(final, "stage2") if p["exposure_id"] == grism_id]
    assert spec2["pipeline"] == "calwebb_spec2" and spec2["outcome"] == "success"
    outputs = {o["suffix"]: o for o in spec2["outputs"]}
    assert {"cal", "x1d", "asn"} <= set(outputs)
    for o in spec2["outputs"] + spec3["outputs"]:
        assert file_digest(o["path"]) == o["digest"]
    with fits.open(outputs["cal"]["path"]) as hdul:
        # One cutout per star of the catalog: extract_2d found all three.
        assert len([h for h in hdul if h.name == "SCI"]) == len(wfss_kit.specs["wfss"].stars)
        # jwst records the members' names: the catalog, segmentation map and image it used.
        assert (hdul[0].header["SCATFILE"], hdul[0].header["SEGMFILE"],
                hdul[0].header["DIRIMAGE"]) == tuple(
            Path(direct_outputs[s]).name for s in ("cat", "segm", "i2d"))
    spec3_outputs = {o["suffix"] for o in spec3["outputs"]}
    assert {"x1d", "c1d"} <= spec3_outputs
    spec3_members = [Path(m["expname"]).name for m in spec3["association"]["members"]]
    assert spec3_members == [Path(outputs["cal"]["path"]).name]


def test_the_wfss_spectra_get_their_previews_a_line_per_source(run, tmp_path):
    """jwst's own x1d and c1d of a WFSS run, previewed as the daemon does (in
    a copy: the daemon draws its own): a c1d's table is COMBINE1D, and each
    row of either is a source (every c1d preview failed; the x1d's sources
    were drawn as their median)."""
    import shutil

    from calstream.steps.previews import plots
    from calstream.steps.previews.make import make_previews
    from calstream.steps.previews.naming import planned_previews

    wfss_kit, final, _, _, _ = run
    _, grism = wfss_kit.by_mode["wfss"]
    grism_id = grism.name.rsplit("_", 1)[0]
    [spec2] = [p for p in products(final, "stage2") if p["exposure_id"] == grism_id]
    [spec3] = stage3(final, "calwebb_spec3")
    spectra = [shutil.copy(o["path"], tmp_path) for o in spec2["outputs"] + spec3["outputs"]
               if o["suffix"] in ("x1d", "c1d")]
    assert sorted(Path(s).name.rsplit("_", 1)[1] for s in spectra) == \
        ["c1d.fits", "x1d.fits", "x1d.fits"]
    result = make_previews(planned_previews(spectra))
    assert result["failed"] == {} and len(result["made"]) == 2 * len(spectra)
    stars = len(wfss_kit.specs["wfss"].stars)
    for spectrum in spectra:
        lines = plots.spectrum(spectrum).axes[0].lines
        assert [line.get_label() for line in lines][:1] == ["source 1"]
        assert len(lines) == min(stars, plots.SOURCES_SHOWN)


def test_a_grism_whose_direct_image_is_late_is_held_then_released_not_dead_lettered(run):
    wfss_kit, final, _, _, _ = run
    _, grism = wfss_kit.by_mode["wfss"]
    grism_id = grism.name.rsplit("_", 1)[0]
    holds = [m for m in final if isinstance(m, contract.Message) and m.type == "hold"]
    assert [(h["exposure_id"], h["state"], h.get("waiting_for")) for h in holds] == [
        (grism_id, "held", "direct_image"), (grism_id, "released", "direct_image")]
    held, released = holds
    assert "WFSS" in held["reason"] and released["release"] is None
    [image3] = stage3(final, "calwebb_image3")
    assert held["since"] < image3["emitted_at"]  # held before the direct image was there
    assert released["direct_image"] == {o["suffix"]: o["path"]
                                        for o in image3["outputs"]}["i2d"]
    [order] = [m for m in final if isinstance(m, contract.Message) and m.type == "work_order"
               and m["stage"] == "stage2" and m["exposure_id"] == grism_id]
    assert released["emitted_at"] <= order["emitted_at"]
    dead = [m for m in final if isinstance(m, contract.Message) and m.type == "dead_letter"]
    assert not dead, [m.body for m in dead]


def test_every_wfss_product_is_bit_identical_to_the_direct_jwst_run(run):
    kit, _, records, direct, timings = run
    for stage in STAGES:
        assert records[stage], f"the daemon made no {stage} product"
        for record in records[stage]:
            assert record["event"]["crds_context"] == kit.context
    compared, failures, extra = compare_records(records, direct, STAGES)
    print(f"\nwfss: {len(compared)} products compared: "
          + ", ".join(sorted(name for _, name, _ in compared)))
    for stage, name, differences in compared:
        for d in differences:
            print(f"    {stage} {name}: {d}")
    # The direct image's catalog and segmentation map (the grism's inputs) among them.
    names = {name for _, name, _ in compared}
    assert {f"{DIRECT_PRODUCT}_cat.ecsv", f"{DIRECT_PRODUCT}_segm.fits",
            f"{DIRECT_PRODUCT}_i2d.fits", f"{GRISM_PRODUCT}_x1d.fits"} <= names
    assert not extra, f"direct products the daemon did not make: {extra}"
    # The x1d's FILENAME is an allowed difference as a path; its file name is not.
    for _, name, differences in compared:
        for d in differences:
            if d.where.endswith("header FILENAME"):  # (the tree's copy is shortened)
                ours, theirs = d.detail.split(" != ")
                assert Path(ours.strip("'")).name == Path(theirs.strip("'")).name, (name, d)
    assert not failures, "\n".join(failures)
