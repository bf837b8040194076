"""Build 12.3's new modes through the daemon, bit-identical to jwst run by hand.

NIRCam DHS (`calstream simulate --modes dhs`): one NRC_TSGRISM exposure of
NRCA1 through the GDHS0 pupil, read in the SUB41STRIPE1_DHS stripe subarray,
with its synthetic references in the kit's offline CRDS context. One daemon
run (watcher, detector1, planner, stage 2; one worker) makes rate/rateints,
then spec2's calints and x1dints (one slit per stripe); jwst keeps DHS out of
tso3, so nothing follows. Every product is compared with jwst's own run on
the same file: ``Detector1Pipeline.call`` on the uncal file, then
``Spec2Pipeline.call`` on the level-2 association ``asn_generate`` makes of
the kit's pool, in the same CRDS context, with the step parameters the
daemon's provenance records say it used: every data extension bit-identical.
The direct runs go in a process of their own while the daemon runs (its one
worker leaves the other core idle); the parameters they used are checked
against the daemon's records afterwards.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from astropy.io import fits

from calstream.daemon.doers.product_store import ProductStore
from calstream.steps.crds_env import CRDS_VARS, refresh_crds
from calstream.steps.environment import environ
from calstream.steps.fitsfile import file_digest
from calstream.steps.synthetic import dhs
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.topics import contract

from ..direct_jwst import generated_associations, is_level3, run_pipeline, write_association
from ..fidelity_compare import ALLOWED, DATA, compare_products, describe, unexplained
from .support import daemon_config, products, read_all, running_daemon, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# The step parameters of the direct runs: the embedded default configures none
# for detector1 or spec2 (CRDS parameter references, 'N/A' here, would apply
# in both). The daemon's provenance records must say the same.
DIRECT_STEPS: dict[str, dict] = {"detector1": {}, "stage2": {}}

DHS_ID = "jw01234012001_01101_00001_nrca1"


def _direct_chain(kit, out: Path) -> None:
    """jwst by hand, in its own process: detector1 on the uncal file, then spec2
    on the level-2 association asn_generate makes of the pool, both with
    `DIRECT_STEPS` (the test checks the daemon's records say the same)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    [asn] = [a for a in generated_associations(kit.pool_path) if not is_level3(a)]
    assert asn["products"][0]["name"] == DHS_ID
    out.mkdir(parents=True)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        pool.submit(run_pipeline, "calwebb_detector1", kit.uncal_files[0], out,
                    DIRECT_STEPS["detector1"]).result()
        pool.submit(run_pipeline, "calwebb_spec2", write_association(asn, out), out,
                    DIRECT_STEPS["stage2"]).result()


@pytest.fixture(scope="module")
def dhs_run(tmp_path_factory, broker):
    """The DHS exposure through one daemon, and jwst run by hand on the same file
    meanwhile (on the core the daemon's one worker leaves idle):
    (messages, kit, provenance records by stage, the direct runs' directory)."""
    root = tmp_path_factory.mktemp("newmodes")
    kit = build_kit(root / "kit", modes=("dhs",))
    assert [p.name for p in kit.uncal_files] == [f"{DHS_ID}_uncal.fits"]
    cfg = daemon_config(root, broker, "newmodes.", workers=1,
                        roles=["watcher", "detector1", "planner", "stage2"])

    async def daemon_run():
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, _direct_chain, kit, root / "direct")
            async with running_daemon(cfg):
                await anyio.to_thread.run_sync(lambda: deliver(kit.uncal_files, cfg.inbox))
                await wait_for(cfg, ["products"], lambda ms: products(ms, "stage2"),
                               timeout=600)
        # Read once it stopped: read_all's markers would be records for its consumers.
        return await read_all(cfg, ["products", "work.stage2", "work.stage3", "deadletter"])

    # Only the kit's CRDS settings: none of the session's may leak in (the
    # direct runs' process inherits them).
    with environ({**dict.fromkeys(CRDS_VARS), **kit.crds_env}):
        refresh_crds()
        messages = anyio.run(daemon_run)
        records: dict[str, list[dict]] = {}
        for record in ProductStore(cfg.products).records():
            records.setdefault(record["event"]["stage"], []).append(record)
        yield messages, kit, records, root / "direct"


def _steps(record: dict) -> dict:
    """The step parameters the daemon's provenance record says the run used."""
    for holder in (record, record.get("event", {})):
        if isinstance(holder.get("parameters"), dict):
            return dict(holder["parameters"].get("steps") or {})
    return {}


def test_dhs_runs_detector1_then_spec2_and_nothing_more(dhs_run):
    messages, kit, records, _ = dhs_run
    [d1] = products(messages, "detector1")
    [s2] = products(messages, "stage2")
    assert (d1["exposure_id"], d1["outcome"], s2["outcome"]) == (DHS_ID, "success", "success")
    assert s2["pipeline"] == "calwebb_spec2"
    assert {o["suffix"] for o in d1["outputs"]} >= {"rate", "rateints"}
    outputs = {o["suffix"]: o for o in s2["outputs"]}
    assert {"calints", "x1dints"} <= set(outputs)
    # spec2 takes rateints (a time series), and extracts one slit per stripe.
    [order] = [m for m in messages if isinstance(m, contract.Message)
               and m.type == "work_order" and m["stage"] == "stage2"]
    [science] = order["association"]["products"][0]["members"]
    assert (Path(science["expname"]).name, science["exptype"]) == (
        f"{DHS_ID}_rateints.fits", "science")
    assert order["association"]["asn_type"] == "tso-spec2"
    with fits.open(outputs["calints"]["path"]) as hdul:
        assert [h.header["SLTNAME"] for h in hdul if h.name == "SCI"] == [str(dhs.STRIPE_ID)]
        assert hdul[0].header["S_EXTR2D"] == "COMPLETE"
    for event in (d1, s2):
        assert event["crds_context"] == kit.context
        for o in event["outputs"]:
            assert file_digest(o["path"]) == o["digest"]
    # jwst keeps DHS out of tso3: no stage-3 order, no dead letter.
    kinds = [(m.type, m.get("stage")) for m in messages if isinstance(m, contract.Message)]
    assert ("work_order", "stage3") not in kinds
    assert not [m for m in messages if isinstance(m, contract.Message)
                and m.type == "dead_letter"], "dead letters"
    assert set(records) == {"detector1", "stage2"}


def test_dhs_products_are_bit_identical_to_the_direct_jwst_run(dhs_run):
    messages, kit, records, direct = dhs_run
    [d1_record] = records["detector1"]
    [s2_record] = records["stage2"]
    # The direct runs used the step parameters the daemon's records say it used.
    assert {"detector1": _steps(d1_record), "stage2": _steps(s2_record)} == DIRECT_STEPS
    compared, failures = [], []
    for record in (d1_record, s2_record):
        assert record["event"]["crds_context"] == kit.context
        for output in record["event"]["outputs"]:
            ours = Path(output["path"])
            if output["suffix"] == "asn":
                continue
            differences = compare_products(ours, direct / ours.name)
            compared.append(ours.name)
            print(f"\n  {ours.name}: " + ("; ".join(str(d) for d in differences) or "identical"))
            assert not [d for d in differences if d.kind == DATA], describe(differences)
            left = unexplained(differences, ALLOWED)
            if left:
                failures.append(f"{ours.name}:\n{describe(left)}")
    assert sorted(n.rsplit("_", 1)[1] for n in compared) == [
        "calints.fits", "rate.fits", "rateints.fits", "x1dints.fits"]
    made = {p.name for p in direct.iterdir() if p.suffix == ".fits"}
    assert made == set(compared), "the direct runs made other products"
    assert not failures, "\n".join(failures)
