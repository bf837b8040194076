"""NIRISS AMI, end to end: simulate -> detector1 -> image2 (rateints ->
calints) -> level-3 association (the planner's) -> calwebb_ami3.

The kit's "ami" mode is a target and its PSF calibrator, both point sources
seen through the non-redundant mask and blurred by the same pointing jitter
(see `steps.synthetic.ami`). jwst's fringe model knows no jitter: the raw
squared visibilities of each star fall with baseline as the jitter predicts,
and only dividing the target's by the calibrator's (ami_normalize) brings
them back to 1. Closure phases of a point source are 0, raw and calibrated.
test_fidelity runs these checks on its daemon run's products, as (kit,
[Exposure] in observing order, the level-3 association, {"outputs", "crds_context"}).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import ami

# What the fits must reach. Measured here: closure phases scatter by
# ~0.5 deg (the largest of 35 up to ~1.7 deg once calibrated), squared
# visibilities by ~0.02 around the jitter's prediction; besides the jitter,
# jwst's model assumes the commissioning pupil distortion, which the
# simulation leaves out, and that costs a little more on some baselines.
# The jitter takes ~0.1 off the longest baselines' raw squared visibilities.
CLOSURE_PHASE_DEG = 3.0  # any one closure phase
CLOSURE_PHASE_RMS_DEG = 1.0
VIS2_RAW_VS_JITTER = (0.03, 0.08)  # median and largest difference from the prediction
VIS2_CALIBRATED = 0.05  # largest difference from 1


def check_level2_associations(stage2) -> None:
    """jwst's Asn_Lv2Image takes an AMI exposure's rateints, alone."""
    for record, level2 in stage2:
        assert [{**m, "expname": Path(m["expname"]).name}
                for m in level2["products"][0]["members"]] == [
            {"expname": Path(record.products["rateints"]).name, "exptype": "science"}]


def _outputs(result: dict, suffix: str) -> list[Path]:
    return [Path(p) for p in result["outputs"] if Path(p).name.endswith(f"_{suffix}.fits")]


def _observables(path: Path):
    from stdatamodels.jwst.datamodels import AmiOIModel

    with AmiOIModel(str(path)) as model:
        vis2 = np.asarray(model.vis2["VIS2DATA"], dtype=float)
        baselines = np.hypot(model.vis2["UCOORD"], model.vis2["VCOORD"])
        t3phi = np.asarray(model.t3["T3PHI"], dtype=float)
        return model.meta.instrument.filter, vis2, baselines, t3phi, model.meta.cal_step


def check_stages_1_and_2_make_calints_of_both_stars(visit):
    from stdatamodels.jwst.datamodels import CubeModel

    kit, records, _, _ = visit
    spec = kit.specs["ami"]
    assert [r.header["IS_PSF"] for r in records] == [False, True]
    for record in records:
        with CubeModel(record.products["calints"]) as model:
            assert model.meta.exposure.type == "NIS_AMI"
            assert model.data.shape == (spec.nints, ami.SUB80.ysize, ami.SUB80.xsize)
            assert model.meta.cal_step.flat_field == "COMPLETE"
            # The star is where it was put: the peak within a pixel of the
            # aperture reference plus the star's offset.
            image = np.nanmedian(model.data, axis=0)
            row, col = np.unravel_index(np.nanargmax(image), image.shape)
            offset = spec.star(int(record.header["EXPOSURE"]))[4]
            assert abs(col - (ami.XREF - 1 + offset[0])) <= 1
            assert abs(row - (ami.YREF - 1 + offset[1])) <= 1


def check_ami3_association_has_the_target_and_its_calibrator(visit):
    kit, records, asn, result = visit
    assert asn["asn_type"] == "ami3"
    members = asn["products"][0]["members"]
    assert [(Path(m["expname"]).name, m["exptype"]) for m in members] == [
        (f"{records[0].exposure_id}_calints.fits", "science"),
        (f"{records[1].exposure_id}_calints.fits", "psf"),
    ]
    # The target number is the program's (test_fidelity checks the whole name
    # against asn_generate's).
    assert re.fullmatch(r"jw01234-o006_t\d{3}_niriss_f480m-nrm-sub80", asn["products"][0]["name"])
    assert result["crds_context"] == kit.context


def check_ami_analyze_fits_each_star_and_sees_the_jitter(visit):
    kit, records, asn, result = visit
    spec = kit.specs["ami"]
    science = _outputs(result, "ami-oi")
    psf = _outputs(result, "psf-ami-oi")
    # One averaged OIFITS product per exposure, named after its member.
    acid = asn["asn_id"]
    assert [p.name for p in science] == [f"{records[0].exposure_id}_{acid}_ami-oi.fits"]
    assert [p.name for p in psf] == [f"{records[1].exposure_id}_{acid}_psf-ami-oi.fits"]
    for path in science + psf:
        filt, vis2, baselines, t3phi, cal_step = _observables(path)
        assert filt == ami.FILTER and cal_step.ami_analyze == "COMPLETE"
        assert vis2.shape == (21,) and t3phi.shape == (35,)
        # A point source: closure phases vanish; the raw squared visibilities
        # are what the jitter leaves on each baseline, which is well below 1
        # on the longest ones.
        assert np.max(np.abs(t3phi)) < CLOSURE_PHASE_DEG
        assert np.sqrt(np.mean(t3phi**2)) < CLOSURE_PHASE_RMS_DEG
        np.testing.assert_allclose(np.sort(baselines), np.sort(ami.baseline_lengths()), rtol=1e-3)
        expected = ami.jitter_visibility2(baselines, spec.jitter_mas)
        median, largest = VIS2_RAW_VS_JITTER
        assert np.median(np.abs(vis2 - expected)) < median
        assert np.max(np.abs(vis2 - expected)) < largest
        order = np.argsort(baselines)
        assert vis2[order[-5:]].mean() < vis2[order[:5]].mean() - 0.05


def check_ami_normalize_calibrates_the_target_by_its_psf_star(visit):
    _, _, asn, result = visit
    [norm] = _outputs(result, "aminorm-oi")
    assert norm.name == f"{asn['products'][0]['name']}_aminorm-oi.fits"
    _, vis2, baselines, t3phi, cal_step = _observables(norm)
    assert cal_step.ami_normalize == "COMPLETE"
    # The jitter is gone: a point source, calibrated by a point source.
    assert np.max(np.abs(vis2 - 1.0)) < VIS2_CALIBRATED
    order = np.argsort(baselines)
    assert abs(vis2[order[-5:]].mean() - vis2[order[:5]].mean()) < 0.03
    assert np.max(np.abs(t3phi)) < CLOSURE_PHASE_DEG
    assert np.sqrt(np.mean(t3phi**2)) < CLOSURE_PHASE_RMS_DEG
