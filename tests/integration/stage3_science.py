"""What stage 3 made of the synthetic program, against what the simulation
injected: the image3 mosaic of observation 001's two visits, tso3 of the
segmented time series, spec3 of the MIRI LRS nods, and (issue 16) a CRDS
parameter file asking for absolute alignment.

test_stage3 runs these on its daemons' own stage-3 products (the
associations the planner built, the runs the stage-3 workers made), so the
program is calibrated once for both the streaming and the science checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calstream.steps.synthetic import spectroscopy as lrs
from calstream.steps.synthetic.program import integration_times, program_truth


def outputs(event, suffix: str) -> list[Path]:
    return [Path(o["path"]) for o in event["outputs"] if o["suffix"] == suffix]


def association(event) -> dict:
    """The level-3 association the run archived (as the planner built it)."""
    [path] = outputs(event, "asn")
    return json.loads(path.read_text())


def check_image3_mosaic(kit, seed: int, event) -> None:
    """image3 aligned, combined and measured both visits of observation 001."""
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    from stdatamodels.jwst.datamodels import ImageModel

    asn = association(event)
    name = asn["products"][0]["name"]
    subarray = kit.specs["imaging"].subarray.lower()
    assert name == event["product_name"] == f"jw01234-o001_t001_nircam_clear-f150w-{subarray}"
    assert {m["exptype"] for m in asn["products"][0]["members"]} == {"science"}
    assert event["crds_context"] == kit.context
    crfs = outputs(event, "crf")
    # One per member: both visits' dithers.
    assert len(crfs) == len(asn["products"][0]["members"]) == 2 * kit.specs["imaging"].dithers
    [i2d], [cat], [segm] = (outputs(event, s) for s in ("i2d", "cat", "segm"))
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

    truth = program_truth(kit.specs["imaging"], seed=seed)
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


def check_tso3(kit, event, segments: list[Path]) -> None:
    """tso3 joined the segments (in order) into one light curve with the transit."""
    from astropy.io import fits
    from astropy.table import Table
    from stdatamodels.jwst.datamodels import CubeModel

    spec = kit.specs["segmented"]
    assert [fits.getheader(f, 0)["EXSEGNUM"] for f in segments] == [1, 2, 3]
    asn = association(event)
    assert [Path(m["expname"]).name for m in asn["products"][0]["members"]] == [
        f"{f.name.rsplit('_', 1)[0]}_calints.fits" for f in segments]
    crfints = sorted(outputs(event, "crfints"))  # by name: segment 1, 2, 3
    assert len(crfints) == 3
    starts = []
    for path in crfints:
        with CubeModel(str(path)) as model:
            starts.append(model.meta.exposure.integration_start)
            assert model.data.shape[0] == 3
    assert starts == [1, 4, 7]

    [phot] = outputs(event, "phot")
    table = Table.read(phot)
    # One row per integration of the whole exposure, in time order, at the
    # times the INT_TIMES tables gave.
    assert len(table) == spec.nints
    mid = integration_times(spec, 1)["int_mid_MJD_UTC"]
    np.testing.assert_allclose(np.asarray(table["MJD"]), mid, atol=1e-8)
    flux = np.asarray(table["net_aperture_sum"], dtype=float)
    depth = spec.measured_depth(flux)
    assert depth == pytest.approx(spec.transit_depth, abs=0.003)


def check_spec3(kit, event) -> None:
    """spec3 combined both LRS nods and gave back the injected source."""
    from stdatamodels.jwst.datamodels import MultiSpecModel, SlitModel

    members = association(event)["products"][0]["members"]
    assert [m["exptype"] for m in members] == ["science", "science", "background", "background"]
    assert len(outputs(event, "crf")) == 2
    [s2d], [x1d] = outputs(event, "s2d"), outputs(event, "x1d")
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


def _absolute_alignment_context(kit, seed: int, directory: Path) -> str:
    """A new context of the kit's cache whose pars-tweakregstep also asks for
    absolute alignment to a local ECSV catalogue of the (shifted) stars."""
    import asdf
    from astropy.table import Table

    from calstream.steps.synthetic.crds_cache import derive_context

    truth = program_truth(kit.specs["imaging"], seed=seed)
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


def check_absolute_alignment(kit, seed: int, members, directory: Path) -> None:
    """image3 of ``members`` (the planner's records of one visit's calibrated
    exposures) in a context whose pars-tweakregstep asks for absolute
    alignment: calstream's run obeys it, bit-identical to jwst's own."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    from jwst.pipeline import Image3Pipeline
    from stdatamodels.jwst.datamodels import ImageModel

    from calstream.daemon.deciders.order_parameters import order_parameters, run_steps
    from calstream.daemon.deciders.work_items import work_order_item
    from calstream.daemon.operations import embedded_default
    from calstream.daemon.operations.config import load
    from calstream.steps.association_run import run_association
    from calstream.steps.associations import association_filename
    from calstream.steps.crds_env import refresh_crds
    from calstream.steps.environment import environ

    from ..as_planned import level3_association

    directory.mkdir(parents=True, exist_ok=True)
    context = _absolute_alignment_context(kit, seed, directory)
    asn = level3_association(members)
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
    item = work_order_item(order, stage="stage3", task="", key="", record=None,
                           steps=run_steps(load(None, env={}).step_parameters(), order))
    # The embedded default (offline) would switch the alignment off, visibly.
    embedded = load(embedded_default.write(directory), env={}).step_parameters()
    assert order_parameters(embedded, "calwebb_image3", science={"exp_type": "NRC_IMAGE"},
                            program="01234") == {"steps": {"tweakreg": {"abs_refcat": ""}}}

    direct_dir = directory / "direct"
    direct_dir.mkdir()
    asn_path = direct_dir / association_filename(asn)
    asn_path.write_text(json.dumps(asn))
    with environ({"CRDS_CONTEXT": context}):
        # This process may have read another kit's context of the same name.
        refresh_crds(force=True)
        mine = run_association(**item.task_kwargs, output_dir=str(directory / "calstream"))
        Image3Pipeline.call(str(asn_path), output_dir=str(direct_dir), save_results=True,
                            configure_log=False)
    # (The products' CRDS_CTX is the members': image3 keeps the first input's
    # metadata; the log and the alignment below show context 2's pars file.)
    assert mine["steps"] == {}

    [i2d] = [Path(p) for p in mine["outputs"] if p.endswith("_i2d.fits")]
    with ImageModel(str(i2d)) as ours, ImageModel(str(direct_dir / i2d.name)) as theirs:
        assert ours.meta.cal_step.tweakreg == "COMPLETE"
        assert ours.data.tobytes() == theirs.data.tobytes()  # bit-identical SCI
    # Aligned to the catalogue: its stars are where the catalogue has them.
    truth = program_truth(kit.specs["imaging"], seed=seed)
    injected = SkyCoord([s.ra for s in truth.stars], [s.dec for s in truth.stars], unit="deg")
    shifted = SkyCoord(injected.ra, injected.dec + REFCAT_SHIFT_ARCSEC * u.arcsec)
    [cat] = [Path(p) for p in mine["outputs"] if p.endswith("_cat.ecsv")]
    found = Table.read(cat)["sky_centroid"]
    assert np.median(found.match_to_catalog_sky(shifted)[1].arcsec) < 0.03
    assert np.median(found.match_to_catalog_sky(injected)[1].arcsec) > 0.07
