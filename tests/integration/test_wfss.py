"""The NIRISS WFSS chain through the daemon, on the real embedded broker with the
real jwst pipelines: the direct image's image3 catalog and segmentation map
feed the grism image's spec2, which feeds spec3.

One daemon run: the direct image (NIS_IMAGE) and the grism image (NIS_WFSS) of
one visit arrive; the planner orders the grism's spec2 only once the direct
image's level-3 product (i2d, cat, segm) exists, and names those files as the
association's `direct_image`, `sourcecat` and `segmap` members.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from astropy.io import fits

from calstream.steps.environment import environ
from calstream.steps.fitsfile import file_digest
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.topics import contract

from .support import daemon_config, products, read_all, running_daemon, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# jwst's names: the grism's level-3 product puts the blocking filter first and,
# as jwst's WFSS rules do, leaves the subarray out.
DIRECT_PRODUCT = "jw01234-o011_t001_niriss_clear-f150w-sub128"
GRISM_PRODUCT = "jw01234-o011_t001_niriss_f150w-gr150c"


@pytest.fixture(scope="module")
def wfss_kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("wfss")
    k = build_kit(root, seed=3, modes=("wfss",))
    with environ(k.crds_env):
        yield k


def stage3(messages, pipeline: str):
    return [p for p in products(messages, "stage3")
            if p["outcome"] == "success" and p["pipeline"] == pipeline]


async def test_the_direct_images_catalog_feeds_the_grism_spec2_then_spec3(
        tmp_path, broker, wfss_kit, unique_prefix):
    direct, grism = wfss_kit.by_mode["wfss"]
    grism_id = grism.name.rsplit("_", 1)[0]
    cfg = daemon_config(tmp_path, broker, unique_prefix, workers=1, stage3_settle=0.5)
    async with running_daemon(cfg):
        await anyio.to_thread.run_sync(lambda: deliver([direct, grism], cfg.inbox))
        await wait_for(cfg, ["products"], lambda ms: stage3(ms, "calwebb_spec3"), timeout=900)
        final = await read_all(cfg, ["products", "work.stage2", "work.stage3"])

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
