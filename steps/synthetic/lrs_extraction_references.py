"""The MIRI LRS references of spec2's flux and extraction chain (see
`spec_references` for the rest): PATHLOSS (the inverse of the slit's
throughput for a Gaussian PSF), PHOTOM (the conversion the simulation
inverted), EXTRACT1D (JSON: a box aperture that follows the source), APCORR
(the Gaussian PSF's missing light outside that box) and PSF (the same
Gaussian, for optimal extraction). All tabulate on one wavelength grid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import spectroscopy as lrs
from calstream.steps.synthetic.reference_models import (
    AUTHOR,
    PEDIGREE,
    USEAFTER,
    TreeReference,
    stamp_reference,
)

EXP_TYPE = "MIR_LRS-FIXEDSLIT"
# Extraction box (pixels, cross-dispersion) and where its aperture correction is tabulated.
EXTRACT_WIDTH = 11
APCORR_SIZES = np.arange(3.0, 31.0, 2.0)



def stamp_lrs(model, reftype: str, description: str, *, subarray: bool = True) -> None:
    """Stamp a MIRIMAGE reference; subarray-sized ones are FULL."""
    stamp_reference(model, "MIRI", reftype, description, detector=lrs.DETECTOR,
                    subarray=lrs.FULL_FRAME if subarray else None)


# Wavelength grid of the tabulated corrections (um), covering the spectrum with a margin.
_GRID = np.arange(4.5, 14.6, 0.1)


def pathloss(spec):
    from stdatamodels.jwst.datamodels import MirLrsPathlossModel

    # The correction (1 / throughput) on a grid of source positions relative to
    # the slit reference: columns along the slit, rows across it, in pixels.
    cols = np.arange(-24.0, 24.5, 1.0)
    rows = np.arange(-3.0, 3.5, 0.5)
    wave = _GRID[::-1]  # jwst reads MIRI LRS pathloss tables in decreasing wavelength
    throughput = np.array(
        [lrs.slit_throughput(wave, spec.psf_fwhm_10um, r * lrs.PIXEL_SCALE) for r in rows]
    )  # [row, wave]
    correction = np.where(throughput > 1e-3, 1.0 / np.maximum(throughput, 1e-3), 0.0)
    cube = np.broadcast_to(correction.T[:, :, None], (len(wave), len(rows), len(cols)))
    table = np.zeros(
        len(wave),
        dtype=[
            ("wavelength", "<f4"),
            ("pathloss", "<f4", (len(rows), len(cols))),
            ("pathloss_err", "<f4", (len(rows), len(cols))),
        ],
    )
    table["wavelength"] = wave
    table["pathloss"] = cube
    table["pathloss_err"] = 0.01 * cube
    model = MirLrsPathlossModel(pathloss_table=table, strict_validation=True)
    stamp_lrs(model, "pathloss", "Synthetic MIRI LRS slit losses for a Gaussian PSF")
    w = model.meta.wcsinfo
    w.wcsaxes = 2
    w.crpix1, w.crval1, w.cdelt1 = 1.0, float(cols[0]), 1.0
    w.crpix2, w.crval2, w.cdelt2 = 1.0, float(rows[0]), 0.5
    w.ctype1, w.ctype2 = "PIXEL", "PIXEL"
    w.cunit1, w.cunit2 = "pixel", "pixel"
    model.meta.instrument.filter = lrs.FILTER
    model.meta.exposure.type = EXP_TYPE
    return model


def photom(spec):
    from stdatamodels.jwst.datamodels import MirLrsPhotomModel

    n = len(_GRID)
    table = np.zeros(
        1,
        dtype=[
            ("filter", "S12"),
            ("subarray", "S15"),
            ("photmjsr", "<f4"),
            ("uncertainty", "<f4"),
            ("nelem", "<i2"),
            ("wavelength", "<f4", (n,)),
            ("relresponse", "<f4", (n,)),
            ("reluncertainty", "<f4", (n,)),
        ],
    )
    table[0] = (
        lrs.FILTER,
        "FULL",
        lrs.PHOTMJSR,
        0.01 * lrs.PHOTMJSR,
        n,
        _GRID,
        lrs.relative_response(_GRID),
        np.full(n, 0.01),
    )
    model = MirLrsPhotomModel(phot_table=table, strict_validation=True)
    stamp_lrs(model, "photom", "Synthetic MIRI LRS photometric calibration", subarray=False)
    model.meta.photometry.pixelarea_steradians = lrs.pixel_area_sr()
    model.meta.photometry.pixelarea_arcsecsq = lrs.PIXEL_SCALE**2
    model.meta.exposure.type = EXP_TYPE
    return model


class _JsonReference(TreeReference):
    """A JSON reference file (EXTRACT1D): CRDS metadata at the top, then the content."""

    def validate(self) -> None:
        for key in ("reftype", "instrument", "useafter", "pedigree", "author", "description"):
            if not self.tree.get(key):
                raise ValueError(f"a JSON reference needs {key!r}")

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.tree, indent=2) + "\n")


def extract1d(spec):
    # A box EXTRACT_WIDTH pixels wide across the dispersion, in the columns of
    # the s2d (the resampled slit, which extract_1d reads), nominally at the
    # slit's centre and moved onto the source (use_source_posn: the nods move
    # it along the slit). Two background boxes beside it take what the
    # nod-pair subtraction left, or the sky itself when the association
    # brought no background; they stay clear of the other nod's negative trace.
    centre = round(lrs.SLIT_LENGTH / 2 / lrs.PIXEL_SCALE) + 1
    half = (EXTRACT_WIDTH - 1) / 2
    inner, outer = half + 1.5, half + 5.5
    return _JsonReference(
        {
            "reftype": "EXTRACT1D",
            "instrument": "MIRI",
            "detector": lrs.DETECTOR,
            "subarray": "FULL",
            "exp_type": EXP_TYPE,
            "telescope": "JWST",
            "pedigree": PEDIGREE,
            "useafter": USEAFTER,
            "author": AUTHOR,
            "description": "Synthetic MIRI LRS extraction aperture",
            "apertures": [
                {
                    "id": EXP_TYPE,
                    "region_type": "target",
                    "disp_axis": 2,
                    "xstart": centre - half,
                    "xstop": centre + half,
                    "use_source_posn": True,
                    "bkg_coeff": [
                        [centre - outer],
                        [centre - inner],
                        [centre + inner],
                        [centre + outer],
                    ],
                    "bkg_fit": "poly",
                    "bkg_order": 0,
                }
            ],
        }
    )


def apcorr(spec):
    from scipy.special import erf
    from stdatamodels.jwst.datamodels import MirLrsApcorrModel

    # Fraction of a Gaussian's 1-D profile inside a box of `size` pixels.
    sigma_px = lrs.psf_sigma(_GRID, spec.psf_fwhm_10um) / lrs.PIXEL_SCALE
    # jwst reads the table as apcorr[wavelength, size].
    inside = erf(APCORR_SIZES[None, :] / 2 / (sigma_px[:, None] * math.sqrt(2)))
    nw, ns = len(_GRID), len(APCORR_SIZES)
    table = np.zeros(
        1,
        dtype=[
            ("subarray", "S15"),
            ("wavelength", "<f4", (nw,)),
            ("nelem_wl", "<i2"),
            ("size", "<i4", (ns,)),
            ("nelem_size", "<i2"),
            ("apcorr", "<f4", (nw, ns)),
            ("apcorr_err", "<f4", (nw, ns)),
        ],
    )
    table[0] = ("FULL", _GRID, nw, APCORR_SIZES, ns, 1.0 / inside, 0.001 / inside)
    model = MirLrsApcorrModel(apcorr_table=table, strict_validation=True)
    stamp_lrs(model, "apcorr", "Synthetic MIRI LRS aperture corrections for a Gaussian PSF", subarray=False)
    model.meta.exposure.type = EXP_TYPE
    model.sizeunit = "pixels"
    return model


def psf(spec):
    from stdatamodels.jwst.datamodels import SpecPsfModel

    # The Gaussian cross-dispersion profile, oversampled 4x, by wavelength.
    subpix = 4
    offsets = (np.arange(-15 * subpix, 15 * subpix + 1) / subpix)[None, :]
    sigma_px = lrs.psf_sigma(_GRID, spec.psf_fwhm_10um) / lrs.PIXEL_SCALE
    profile = np.exp(-0.5 * (offsets / sigma_px[:, None]) ** 2)
    profile /= profile.sum(axis=1, keepdims=True)
    model = SpecPsfModel(strict_validation=True)
    model.apertures.append(
        {
            # LRS slits carry no slit name: the one aperture serves any.
            "name": "ANY",
            "subpix": float(subpix),
            "center_col": float(15 * subpix),
            "center_row": 0.0,
            "data": profile.astype(np.float64),
            "wave": _GRID.astype(np.float64),
        }
    )
    stamp_lrs(model, "psf", "Synthetic MIRI LRS spectral PSF: Gaussian", subarray=False)
    model.meta.instrument.filter = lrs.FILTER
    model.meta.exposure.type = EXP_TYPE
    return model
