"""Stage 3 on the synthetic program, offline: simulate -> detector1 -> stage 2
(as the daemon runs it: `build_level2`, then `run_association`) -> level-3
association (`build_level3`, as the planner makes it) -> stage 3.

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

from calstream.steps.associations import Exposure
from calstream.steps.synthetic import spectroscopy as lrs
from calstream.steps.synthetic.program import ProgramSpec, integration_times, program_truth

from ..as_planned import level3_association, offline_kit, report_timings, run_stage3, through_stage2
from ..as_planned import suffix_of as _suffix

# The module fixture (stages 1-2 of every exposure, about 2 minutes of CPU)
# counts against its first test's timeout, beside another file under `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

SEED = 9
MODES = ("imaging", "mosaic", "segmented", "lrs")
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The kit, with CRDS set for the module, and every exposure's stage-2
    products as the planner's records: {mode: [Exposure]}."""
    root = tmp_path_factory.mktemp("stage3")
    with offline_kit(root, TIMINGS, ProgramSpec(), seed=SEED, modes=MODES) as kit:
        t0 = time.perf_counter()
        # Each mode's exposures together: a nod's background is the other nod
        # (Asn_Lv2MIRLRSFixedSlitNod).
        records: dict[str, list[Exposure]] = {
            mode: [record for record, _ in through_stage2(files, root, {})]
            for mode, files in kit.by_mode.items()
        }
        TIMINGS["stages 1-2, all exposures"] = time.perf_counter() - t0
        yield kit, records, root
        TIMINGS["peak RSS of the test process (MB)"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        report_timings(TIMINGS)


def _stage3(pipeline: str, members: list[Exposure], out: Path) -> tuple[dict, dict]:
    """The level-3 association of `members` as the planner builds it, run."""
    asn = level3_association(members)
    t0 = time.perf_counter()
    result = run_stage3(pipeline, asn, out)
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
    assert name == "jw01234-o001_t001_nircam_clear-f150w-sub160"
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
    flux = np.asarray(table["net_aperture_sum"], dtype=float)
    depth = spec.measured_depth(flux)
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


# Issue 16: a CRDS parameter file asking for absolute alignment is obeyed as
# jwst obeys it. The catalogue is the injected stars moved by this much in
# declination, so an aligned mosaic finds its stars there, not where injected.
REFCAT_SHIFT_ARCSEC = 0.1


def _absolute_alignment_context(kit, directory: Path) -> str:
    """A new context of the kit's cache whose pars-tweakregstep also asks for
    absolute alignment to a local ECSV catalogue of the (shifted) stars."""
    import asdf
    from astropy.table import Table

    from calstream.steps.synthetic.crds_cache import derive_context

    truth = program_truth(kit.specs["imaging"], seed=SEED)
    refcat = directory / "local_refcat.ecsv"
    Table({"RA": [s.ra for s in truth.stars],
           "DEC": [s.dec + REFCAT_SHIFT_ARCSEC / 3600 for s in truth.stars]}).write(refcat)
    crds = Path(kit.crds_env["CRDS_PATH"])
    made = []  # one per subarray, as the kit's
    for cached in sorted((crds / "references" / "jwst").glob("jwst_nircam_pars-tweakregstep_*")):
        with asdf.open(cached) as af:
            tree = {k: v for k, v in af.tree.items()
                    if not k.startswith(("asdf_library", "history"))}
        tree["parameters"] = {**tree["parameters"], "abs_refcat": str(refcat), "abs_minobj": 5,
                              "abs_separation": 0.3, "abs_tolerance": 0.2}
        made.append(directory / f"pars-tweakregstep-{len(made)}.asdf")
        asdf.AsdfFile(tree).write_to(made[-1])
    return derive_context(crds, {"pars-tweakregstep": made})


def test_a_crds_pars_file_asking_for_absolute_alignment_is_obeyed(program, tmp_path):
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    from jwst.pipeline import Image3Pipeline
    from stdatamodels.jwst.datamodels import ImageModel

    from calstream.daemon.deciders.order_parameters import order_parameters
    from calstream.daemon.deciders.work_items import work_order_item
    from calstream.daemon.operations import embedded_default
    from calstream.daemon.operations.config import load
    from calstream.steps.association_run import run_association
    from calstream.steps.associations import association_filename
    from calstream.steps.environment import environ

    kit, records, _ = program
    context = _absolute_alignment_context(kit, tmp_path)
    asn = level3_association(records["imaging"])
    name = asn["products"][0]["name"]
    # calstream's path, as the daemon takes it: configuration -> the planner's
    # order parameters -> the work item -> the stage-3 worker's task. A
    # deployment that configures nothing passes nothing: CRDS decides.
    parameters = order_parameters(load(None, env={}).step_parameters(), "calwebb_image3",
                                  science={"exp_type": "NRC_IMAGE"}, program="01234")
    assert parameters == {}
    order = {"association": asn, "pipeline": "calwebb_image3", "product_name": name,
             "program": "01234", "parameters": parameters, "inputs": [],
             "association_path": association_filename(asn)}
    item = work_order_item(order, stage="stage3", task="", key="", record=None)
    # The embedded default (offline) would switch the alignment off, visibly.
    embedded = load(embedded_default.write(tmp_path), env={}).step_parameters()
    assert order_parameters(embedded, "calwebb_image3", science={"exp_type": "NRC_IMAGE"},
                            program="01234") == {"steps": {"tweakreg": {"abs_refcat": ""}}}

    direct_dir = tmp_path / "direct"
    direct_dir.mkdir()
    asn_path = direct_dir / association_filename(asn)
    asn_path.write_text(json.dumps(asn))
    t0 = time.perf_counter()
    with environ({"CRDS_CONTEXT": context}):
        mine = run_association(**item.task_kwargs, output_dir=str(tmp_path / "calstream"))
        TIMINGS["image3, calstream, absolute alignment"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        Image3Pipeline.call(str(asn_path), output_dir=str(direct_dir), save_results=True,
                            configure_log=False)
        TIMINGS["image3, direct Pipeline.call"] = time.perf_counter() - t0
    # (The products' CRDS_CTX is the members': image3 keeps the first input's
    # metadata; the log and the alignment below show context 2's pars file.)
    assert mine["steps"] == {}

    [i2d] = _outputs(mine, "i2d")
    with ImageModel(str(i2d)) as ours, ImageModel(str(direct_dir / i2d.name)) as theirs:
        assert ours.meta.cal_step.tweakreg == "COMPLETE"
        assert ours.data.tobytes() == theirs.data.tobytes()  # bit-identical SCI
    # Aligned to the catalogue: its stars are where the catalogue has them.
    truth = program_truth(kit.specs["imaging"], seed=SEED)
    injected = SkyCoord([s.ra for s in truth.stars], [s.dec for s in truth.stars], unit="deg")
    shifted = SkyCoord(injected.ra, injected.dec + REFCAT_SHIFT_ARCSEC * u.arcsec)
    [cat] = _outputs(mine, "cat")
    found = Table.read(cat)["sky_centroid"]
    assert np.median(found.match_to_catalog_sky(shifted)[1].arcsec) < 0.03
    assert np.median(found.match_to_catalog_sky(injected)[1].arcsec) > 0.07
