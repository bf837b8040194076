"""Stage 3 on the synthetic program, offline: simulate -> detector1 -> stage 2 ->
level-3 association (`build_level3`, as the planner makes it) -> stage 3.

One kit in one synthetic CRDS context: observation 001's two dithered
visits (image3 mosaics them), a time series cut into three segments (tso3
joins them), and the MIRI LRS nod pair (spec3). Every exposure goes through
detector1 and stage 2 once (module fixture); each test runs one stage-3
pipeline through `run_association` and checks its products against what the
simulation injected.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import pytest

from calstream.steps.association_run import run_association
from calstream.steps.associations import (
    Exposure,
    association_filename,
    build_level3,
    validate_level3,
)
from calstream.steps.crds_env import CRDS_VARS
from calstream.steps.detector1 import run_detector1
from calstream.steps.routing import route
from calstream.steps.stage2 import run_image2, run_spec2
from calstream.steps.synthetic import spectroscopy as lrs
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.level2_asn import write_level2_asn
from calstream.steps.synthetic.program import ProgramSpec, integration_times, program_truth

from ..envutil import environ

pytestmark = pytest.mark.integration

SEED = 9
MODES = ("imaging", "mosaic", "segmented", "lrs")
TIMINGS: dict[str, float] = {}


def _suffix(path: str) -> str:
    return Path(path).name.rsplit("_", 1)[1].split(".")[0]


def _stage2(mode: str, uncal: Path, products: dict, rate_dir: Path, cal_dir: Path,
            files: list[Path]) -> dict:
    """Stage 2 on the level-2 association jwst would make; {suffix: path} of both stages."""
    eid = uncal.name.rsplit("_", 1)[0]
    if mode == "lrs":
        # Each nod is the other's background (Asn_Lv2MIRLRSFixedSlitNod).
        other = next(f for f in files if f != uncal).name.replace("_uncal", "_rate")
        asn = write_level2_asn(rate_dir, Path(products["rate"]), kind="lrs-nod-spec2",
                               companions=[(rate_dir / other, "background")],
                               sequence=files.index(uncal) + 1)
        stage2 = run_spec2(str(asn), str(cal_dir / eid))
    else:
        kind, science = ("tso-image2", "rateints") if mode == "segmented" else ("image2", "rate")
        asn = write_level2_asn(rate_dir, Path(products[science]), kind=kind)
        stage2 = run_image2(str(asn), str(cal_dir / eid))
    return {**products, **{_suffix(p): p for p in stage2["outputs"]}}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The kit, with CRDS set for the module, and every exposure's stage-2
    products as the planner's records: {mode: [Exposure]}."""
    from astropy.io import fits

    root = tmp_path_factory.mktemp("stage3")
    t0 = time.perf_counter()
    kit = build_kit(root / "kit", ProgramSpec(), seed=SEED, modes=MODES)
    TIMINGS["kit"] = time.perf_counter() - t0
    # Only the kit's CRDS settings: none of the session's may leak in.
    with environ({**dict.fromkeys(CRDS_VARS), **kit.crds_env}):
        t0 = time.perf_counter()
        records: dict[str, list[Exposure]] = {}
        for mode, files in kit.by_mode.items():
            # All of a mode's detector1 first: a nod's background is the other nod.
            stage1 = [{_suffix(p): p for p in run_detector1(str(f), str(root / "rate"))["outputs"]}
                      for f in files]
            records[mode] = [
                Exposure(f.name.rsplit("_", 1)[0], dict(fits.getheader(f, 0)),
                         _stage2(mode, f, products, root / "rate", root / "cal", files))
                for f, products in zip(files, stage1, strict=True)
            ]
        TIMINGS["stages 1-2, all exposures"] = time.perf_counter() - t0
        yield kit, records, root
        TIMINGS["peak RSS of the test process (MB)"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("\n" + "\n".join(f"  {k}: {v:.2f}" for k, v in TIMINGS.items()))


def _stage3(pipeline: str, members: list[Exposure], out: Path) -> tuple[dict, dict]:
    """The level-3 association of `members` as the planner builds it, run."""
    from jwst.associations import load_asn

    asn = build_level3(route(members[0].header), members)
    validate_level3(asn)
    load_asn(json.dumps(asn))  # jwst's loader accepts it too
    t0 = time.perf_counter()
    result = run_association(pipeline, asn, association_filename(asn), str(out))
    TIMINGS[pipeline] = time.perf_counter() - t0
    return asn, result


def _outputs(result: dict, suffix: str) -> list[Path]:
    return [Path(p) for p in result["outputs"] if _suffix(p) == suffix]


def test_image3_mosaics_both_visits_of_observation_1(program, tmp_path):
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    from stdatamodels.jwst.datamodels import ImageModel

    kit, records, _ = program
    members = records["imaging"] + records["mosaic"]
    asn, result = _stage3("calwebb_image3", members, tmp_path)

    name = asn["products"][0]["name"]
    assert name == "jw01234-o001_t000_nircam_clear-f150w-sub160"
    assert {m["exptype"] for m in asn["products"][0]["members"]} == {"science"}
    assert result["crds_context"] == kit.context
    crfs = _outputs(result, "crf")
    assert len(crfs) == 8
    [i2d], [cat], [segm] = (_outputs(result, s) for s in ("i2d", "cat", "segm"))
    assert i2d.name == f"{name}_i2d.fits" and cat.name == f"{name}_cat.ecsv"

    corners = []
    for crf in crfs:
        with ImageModel(str(crf)) as model:
            # tweakreg aligned the members to one another (and to no catalog).
            assert model.meta.cal_step.tweakreg == "COMPLETE"
            assert model.meta.cal_step.outlier_detection == "COMPLETE"
            ny, nx = model.data.shape
            # The corners of the whole subarray, reference pixels (outside
            # the bounding box) included.
            corners.append(model.meta.wcs(np.array([0, nx - 1, nx - 1, 0]),
                                          np.array([0, 0, ny - 1, ny - 1]),
                                          with_bounding_box=False))
    with ImageModel(str(i2d)) as mosaic:
        assert mosaic.meta.cal_step.resample == "COMPLETE"
        assert mosaic.meta.asn.pool_name == asn["asn_pool"]
        ny, nx = mosaic.data.shape
        # The second visit is offset: the mosaic is larger than any one dither.
        assert nx * ny > 1.3 * 160 * 160
        for ra, dec in corners:
            x, y = mosaic.meta.wcs.invert(ra, dec, with_bounding_box=False)
            assert np.all((x > -1.5) & (x < nx + 0.5) & (y > -1.5) & (y < ny + 0.5))
        assert np.isfinite(mosaic.data).mean() > 0.8

    truth = program_truth(kit.specs["imaging"], seed=SEED)
    stars = SkyCoord([s.ra for s in truth.stars], [s.dec for s in truth.stars], unit="deg")
    catalog = Table.read(cat)
    assert len(catalog) >= len(stars) - 2
    _, sep, _ = catalog["sky_centroid"].match_to_catalog_sky(stars)
    # Found where they were injected: the mosaic's WCS is the sky's.
    assert np.median(sep.arcsec) < 0.02
    assert (sep.arcsec < 0.1).sum() >= len(stars) - 2
    with ImageModel(str(segm)) as seg:
        assert seg.data.shape == (ny, nx)
        assert len(np.unique(seg.data)) - 1 == len(catalog)


def test_tso3_joins_the_segments(program, tmp_path):
    from astropy.table import Table
    from stdatamodels.jwst.datamodels import CubeModel

    kit, records, _ = program
    spec = kit.specs["segmented"]
    members = records["segmented"]
    assert [m.header["EXSEGNUM"] for m in members] == [1, 2, 3]
    asn, result = _stage3("calwebb_tso3", members, tmp_path)

    assert [Path(m["expname"]).name for m in asn["products"][0]["members"]] == [
        f"{m.exposure_id}_calints.fits" for m in members]
    crfints = _outputs(result, "crfints")
    assert len(crfints) == 3
    starts = []
    for path in crfints:
        with CubeModel(str(path)) as model:
            starts.append(model.meta.exposure.integration_start)
            assert model.data.shape[0] == 3
    assert starts == [1, 4, 7]

    [phot] = _outputs(result, "phot")
    table = Table.read(phot)
    # One row per integration of the whole exposure, in time order, at the
    # times the INT_TIMES tables gave.
    assert len(table) == spec.nints
    mid = integration_times(spec, 1)["int_mid_MJD_UTC"]
    np.testing.assert_allclose(np.asarray(table["MJD"]), mid, atol=1e-8)
    depth = spec.measured_depth(table["net_aperture_sum"])
    assert depth == pytest.approx(spec.transit_depth, abs=0.003)


def test_spec3_combines_the_lrs_nods(program, tmp_path):
    from stdatamodels.jwst.datamodels import MultiSpecModel, SlitModel

    kit, records, _ = program
    asn, result = _stage3("calwebb_spec3", records["lrs"], tmp_path)

    members = asn["products"][0]["members"]
    assert [m["exptype"] for m in members] == ["science", "science", "background", "background"]
    assert len(_outputs(result, "crf")) == 2
    [s2d], [x1d] = _outputs(result, "s2d"), _outputs(result, "x1d")
    with SlitModel(str(s2d)) as model:
        assert model.meta.cal_step.resample == "COMPLETE"
        assert np.isfinite(model.data).mean() > 0.5
    with MultiSpecModel(str(x1d)) as model:
        assert model.meta.cal_step.extract_1d == "COMPLETE"
        assert len(model.spec) == 1
        table = model.spec[0].spec_table
        wave, flux = np.asarray(table["WAVELENGTH"]), np.asarray(table["FLUX"])
    band = np.isfinite(wave) & np.isfinite(flux) & (wave > 5.2) & (wave < 13.5)
    assert band.sum() > 250
    ratio = flux[band] / lrs.source_flux_jy(kit.specs["lrs"], wave[band])
    # Both nods combined give back the injected source.
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
