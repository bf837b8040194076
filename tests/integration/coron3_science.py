"""NIRCam coronagraphy, end to end: simulate -> detector1 -> image2
(rateints -> calints) -> level-3 association (the planner's, with the plan's
coronagraphy candidate) -> calwebb_coron3.

The kit's "coron" mode: a science target with a faint companion behind
MASKA335R, and a PSF reference star in another observation. The checks are
on what coron3 is for: the PSF reference removes most of the star, and the
companion the simulation put next to it comes out of the PSF-subtracted
frames and the resampled image with its injected flux, where it was injected
on the sky. test_fidelity runs them on its daemon run's products, as
(kit, level-3 association, {"outputs", "crds_context"}, {exposure id: Exposure}).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calstream.steps.synthetic import coronagraphy as coron

from ..as_planned import suffix_of as _suffix


def check_level2_associations(stage2) -> None:
    """What jwst's level-2 rules make: the science alone (Asn_Lv2Image);
    the PSF reference alone too, as a special member (Asn_Lv2ImageSpecial)."""
    for record, level2 in stage2:
        assert [m["exptype"] for m in level2["products"][0]["members"]] == ["science"]
        assert level2["asn_rule"] == ("Asn_Lv2ImageSpecial" if record.header["IS_PSF"]
                                      else "Asn_Lv2Image")


def _outputs(result: dict, suffix: str) -> list[Path]:
    return [Path(p) for p in result["outputs"] if _suffix(p) == suffix]


def _aperture(shape, x: float, y: float, r_out: float, r_in: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    r2 = (xx - x) ** 2 + (yy - y) ** 2
    return (r2 <= r_out**2) & (r2 > r_in**2)


def _photometry(image: np.ndarray, x: float, y: float) -> float:
    """Aperture sum at (x, y) less the local background (median of an annulus)."""
    ap = _aperture(image.shape, x, y, 4.0)
    sky = np.nanmedian(image[_aperture(image.shape, x, y, 9.0, 6.0)])
    return float(np.nansum(image[ap]) - sky * ap.sum())


def check_coron3_association_joins_science_and_psf(coron3):
    kit, asn, result, records = coron3
    spec = kit.specs["coron"]
    assert (asn["asn_type"], asn["asn_rule"], asn["asn_id"]) == (
        "coron3", "Asn_Lv3NRCCoron", spec.candidate)
    members = {Path(m["expname"]).name: m["exptype"] for m in asn["products"][0]["members"]}
    assert members == {
        f"{spec.exposure_name(False).exposure_id}_calints.fits": "science",
        f"{spec.exposure_name(True).exposure_id}_calints.fits": "psf",
    }
    assert result["crds_context"] == kit.context
    name = asn["products"][0]["name"]
    assert name.endswith("_nircam_f335m-maskrnd-sub320a335r")
    # One product per step coron3 runs: the PSF stack, per science exposure
    # the aligned PSFs and the PSF-subtracted integrations, per member the
    # outlier-flagged integrations, and the combined image.
    assert [p.name for p in _outputs(result, "psfstack")] == [f"{name}_psfstack.fits"]
    assert len(_outputs(result, "psfalign")) == 1
    assert len(_outputs(result, "psfsub")) == 1
    assert len(_outputs(result, "crfints")) == 2
    assert [p.name for p in _outputs(result, "i2d")] == [f"{name}_i2d.fits"]


def check_psf_reference_removes_the_star(coron3):
    from stdatamodels.jwst.datamodels import CubeModel

    kit, _, result, records = coron3
    spec = kit.specs["coron"]
    truth = coron.coron_truth(spec)
    science = records[spec.exposure_name(False).exposure_id]
    [psfstack], [psfalign], [psfsub] = (_outputs(result, s)
                                        for s in ("psfstack", "psfalign", "psfsub"))
    with CubeModel(str(psfstack)) as stack:
        assert stack.shape == (spec.psf_nints, 320, 320)
    with CubeModel(str(psfalign)) as aligned:
        assert aligned.meta.cal_step.align_psfs == "COMPLETE"
        assert aligned.meta.ref_file.psfmask.name.startswith("crds://jwst_nircam_psfmask_")
    with CubeModel(science.products["calints"]) as cal, CubeModel(str(psfsub)) as sub:
        assert sub.meta.cal_step.klip == "COMPLETE"
        assert sub.shape == cal.shape == (spec.nints, 320, 320)
        # The occulted star, within 0.5" of it, inside the companion's orbit.
        star = _aperture(cal.shape[1:], *truth.star_xy, 8.0)
        for i in range(spec.nints):
            before = np.abs(cal.data[i] - np.nanmedian(cal.data[i]))[star].sum()
            after = np.abs(sub.data[i])[star].sum()
            assert np.isfinite(after)
            assert after / before < 0.2, (i, after / before)
            # Outside the star's residual core, the companion is the brightest thing left.
            left = np.where(star | ~np.isfinite(sub.data[i]), -np.inf, sub.data[i])
            peak = np.unravel_index(np.argmax(left), sub.shape[1:])
            assert np.hypot(peak[1] - truth.companion_xy[0], peak[0] - truth.companion_xy[1]) < 1.5


def check_companion_recovered_with_its_flux_and_position(coron3):
    from stdatamodels.jwst.datamodels import CubeModel, ImageModel

    kit, _, result, _ = coron3
    truth = coron.coron_truth(kit.specs["coron"])
    # What photom made of the injected rate (MJy/sr summed over the PSF).
    expected = truth.companion_rate * coron.PHOTMJSR
    [psfsub], [i2d] = _outputs(result, "psfsub"), _outputs(result, "i2d")
    with CubeModel(str(psfsub)) as sub:
        for i in range(sub.shape[0]):
            assert _photometry(sub.data[i], *truth.companion_xy) == pytest.approx(
                expected, rel=0.1)
    with ImageModel(str(i2d)) as image:
        assert image.meta.cal_step.resample == "COMPLETE"
        assert np.isfinite(image.data).mean() > 0.9
        x, y = image.meta.wcs.invert(*truth.companion_radec)
        data = np.where(np.isfinite(image.data), image.data, 0.0)
        # Found where it was injected on the sky: the chain's WCS is the sky's.
        near = _aperture(data.shape, x, y, 3.0)
        py, px = np.unravel_index(np.argmax(np.where(near, data, -np.inf)), data.shape)
        cy, cx = np.average(np.mgrid[py - 2 : py + 3, px - 2 : px + 3].reshape(2, -1), axis=1,
                            weights=data[py - 2 : py + 3, px - 2 : px + 3].ravel())
        assert np.hypot(cx - x, cy - y) < 0.5
        # i2d keeps the input pixel scale here, so the sum is the same.
        assert _photometry(image.data, x, y) == pytest.approx(expected, rel=0.1)
