"""Synthetic CRDS references for the MIRI LRS fixed-slit visit of `spectroscopy`.

They describe the detector and optics `spectroscopy.simulate_lrs` simulates
(see its docstring for why this mode and the list of types):

* detector1: MASK (reference columns), SATURATION, IPC and LINEARITY
  (identities), RSCD (flag the first group, as MIRI's does), RESET (no reset
  anomaly simulated: zeros), DARK (the constant dark rate), GAIN, READNOISE.
* spec2: DISTORTION (the linear imager mapping), FILTEROFFSET (none),
  SPECWCS (the dispersion and trace), FLAT (the simulated response), PATHLOSS
  (the inverse of the slit's throughput for a Gaussian PSF), PHOTOM (the
  conversion the simulation inverted), AREA (no distortion: ones),
  EXTRACT1D (JSON: a box aperture that follows the source), APCORR (the
  Gaussian PSF's missing light outside that box) and PSF (the same Gaussian,
  for optimal extraction).

Full-frame MIRI files: the dark and reset cubes are the big ones (the dark
holds only as many groups as the spec reads).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import spectroscopy as lrs
from calstream.steps.synthetic.detector_references import DetectorReferences, write_mode_references
from calstream.steps.synthetic.reference_models import (
    AUTHOR,
    PEDIGREE,
    USEAFTER,
    TreeReference,
    dq_def,
)
from calstream.steps.synthetic.spectroscopy import LrsSpec

DETECTOR1_TYPES = (
    "mask",
    "saturation",
    "ipc",
    "rscd",
    "linearity",
    "dark",
    "reset",
    "gain",
    "readnoise",
)
SPEC2_TYPES = (
    "distortion",
    "filteroffset",
    "specwcs",
    "flat",
    "pathloss",
    "photom",
    "area",
    "extract1d",
    "apcorr",
    "psf",
)
ALL_TYPES = DETECTOR1_TYPES + SPEC2_TYPES

EXP_TYPE = "MIR_LRS-FIXEDSLIT"
# Extraction box (pixels, cross-dispersion) and where its aperture correction is tabulated.
EXTRACT_WIDTH = 11
APCORR_SIZES = np.arange(3.0, 31.0, 2.0)


def _detector(spec: LrsSpec | None = None) -> DetectorReferences:
    return DetectorReferences("MIRI", lrs.DETECTOR, lrs.FULL_FRAME, lrs.reference_pixel_mask(),
                              label="MIRI ",
                              mask_description="Synthetic MIRI bad pixel mask: reference columns only",
                              linearity_coeffs=2)


def _stamp(model, reftype: str, description: str, *, subarray: bool = True) -> None:
    _detector().stamp(model, reftype, description, subarray=subarray)


def _shape() -> tuple[int, int]:
    return lrs.NY, lrs.NX


def _zeros_dq():
    return np.zeros(_shape(), dtype=np.uint32)


def _rscd(spec):
    from stdatamodels.jwst.datamodels import RSCDModel

    # MIRI flags the first group of the first integration (and more in later
    # ones, where the reset switch charge decay lingers); rows per pattern.
    table = np.array(
        [("FULL", patt, 1, 3) for patt in lrs.READOUT_PATTERNS],
        dtype=[("subarray", "S17"), ("readpatt", "S12"), ("group_skip1", "<i4"), ("group_skip", "<i4")],
    )
    model = RSCDModel(rscd_group_skip_table=table, strict_validation=True)
    _stamp(model, "rscd", "Synthetic MIRI RSCD: initial groups to skip", subarray=False)
    return model


def _dark(spec):
    from stdatamodels.jwst.datamodels import DarkMIRIModel

    ny, nx = _shape()
    ngroups = spec.ngroups
    tgroup = lrs.FRAME_TIMES[spec.readpatt] * (spec.nframes + spec.groupgap)
    # MIRI darks are subtracted group by group, per integration: [nints, ngroups, ny, nx].
    ramp = spec.dark_rate * tgroup * np.arange(1, ngroups + 1, dtype=np.float32)
    data = np.broadcast_to(ramp[None, :, None, None], (1, ngroups, ny, nx)).astype(np.float32)
    data[:, :, lrs.reference_pixel_mask()] = 0.0
    model = DarkMIRIModel(
        data=data,
        err=np.full(data.shape, 0.01, dtype=np.float32),
        dq=np.zeros(data.shape, dtype=np.uint32),
        strict_validation=True,
    )
    model.dq_def = dq_def(["DO_NOT_USE", "UNRELIABLE_DARK"])
    _stamp(model, "dark", "Synthetic MIRI dark: constant dark rate")
    e = model.meta.exposure
    e.readpatt = spec.readpatt
    e.nframes = spec.nframes
    e.groupgap = spec.groupgap
    e.ngroups = ngroups
    e.nints = 1
    return model


def _reset(spec):
    from stdatamodels.jwst.datamodels import ResetModel

    # A correction for the first two groups only: the reset anomaly fades fast.
    data = np.zeros((1, 2, *_shape()), dtype=np.float32)
    model = ResetModel(
        data=data,
        err=np.zeros_like(data),
        dq=_zeros_dq(),
        strict_validation=True,
    )
    model.dq_def = dq_def(["DO_NOT_USE"])
    _stamp(model, "reset", "Synthetic MIRI reset anomaly: none simulated")
    model.meta.exposure.ngroups = 2
    model.meta.exposure.nints = 1
    model.meta.exposure.readpatt = spec.readpatt
    return model


def _distortion(spec):
    # The same mapping as spectroscopy.pixel_to_v2v3.
    return _detector(spec).distortion(
        (lrs.FULL_XREF - 1, lrs.FULL_YREF - 1), lrs.PIXEL_SCALE, lrs.IMAGER,
        "Synthetic MIRI imager distortion: linear",
        meta={"exposure.p_exptype":
              "MIR_IMAGE|MIR_TACQ|MIR_TACONFIRM|MIR_LRS-FIXEDSLIT|MIR_LRS-SLITLESS|"})


def _filteroffset(spec):
    return _detector(spec).filteroffset(
        [{"filter": lrs.FILTER, "column_offset": 0.0, "row_offset": 0.0}],
        "Synthetic MIRI filter offsets: none")


def wavetable() -> np.ndarray:
    """The SPECWCS table: one row per detector row of the spectrum, short wavelengths last.

    Positions are relative to the slit reference point; the box corners span
    the slit's length across the trace and one row along it.
    """
    rows = np.arange(int(lrs.ROW_SHORT), int(lrs.ROW_LONG) - 1, -1, dtype=float)[::-1]
    y = rows - (lrs.SLIT_YREF - 1)
    x = lrs.trace_offset(rows)
    wave = lrs.wavelength_at_row(rows)
    half = lrs.SLIT_LENGTH / 2 / lrs.PIXEL_SCALE
    table = np.zeros(
        len(rows),
        dtype=[(n, "<f8") for n in ("x_center", "y_center", "wavelength", "x0", "y0", "x1", "y1", "x2", "y2", "x3", "y3")],
    )
    table["x_center"], table["y_center"], table["wavelength"] = x, y, wave
    table["x0"], table["y0"] = x - half, y + 0.5
    table["x1"], table["y1"] = x + half, y + 0.5
    table["x2"], table["y2"] = x + half, y - 0.5
    table["x3"], table["y3"] = x - half, y - 0.5
    # jwst fits the table with y decreasing (wavelength increasing) down the rows.
    return table[np.argsort(-table["y_center"])]


def _specwcs(spec):
    from stdatamodels.jwst.datamodels import MiriLRSSpecwcsModel

    v2, v3 = lrs.pixel_to_v2v3(
        np.array([-1, 1, 1, -1]) * lrs.SLIT_LENGTH / 2 / lrs.PIXEL_SCALE + lrs.SLIT_XREF,
        np.array([-1, -1, 1, 1]) * lrs.SLIT_WIDTH / 2 / lrs.PIXEL_SCALE + lrs.SLIT_YREF,
    )
    model = MiriLRSSpecwcsModel(
        wavetable=wavetable(),
        x_ref=lrs.SLIT_XREF,
        y_ref=lrs.SLIT_YREF,
        # The slitless aperture is not simulated; its reference point is jwst's.
        x_ref_slitless=38.5,
        y_ref_slitless=829.0,
        v2_vert1=float(v2[0]),
        v2_vert2=float(v2[1]),
        v2_vert3=float(v2[2]),
        v2_vert4=float(v2[3]),
        v3_vert1=float(v3[0]),
        v3_vert2=float(v3[1]),
        v3_vert3=float(v3[2]),
        v3_vert4=float(v3[3]),
        strict_validation=True,
    )
    _stamp(model, "specwcs", "Synthetic MIRI LRS dispersion and trace")
    model.meta.instrument.filter = lrs.FILTER
    model.meta.exposure.type = EXP_TYPE
    return model


def _flat(spec):
    return _detector(spec).flat(
        lrs.detector_flat(spec), "Synthetic MIRI LRS flat: the simulated pixel response",
        flag_reference_pixels=False,
        meta={"instrument.filter": lrs.FILTER, "exposure.type": EXP_TYPE})


# Wavelength grid of the tabulated corrections (um), covering the spectrum with a margin.
_GRID = np.arange(4.5, 14.6, 0.1)


def _pathloss(spec):
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
    _stamp(model, "pathloss", "Synthetic MIRI LRS slit losses for a Gaussian PSF")
    w = model.meta.wcsinfo
    w.wcsaxes = 2
    w.crpix1, w.crval1, w.cdelt1 = 1.0, float(cols[0]), 1.0
    w.crpix2, w.crval2, w.cdelt2 = 1.0, float(rows[0]), 0.5
    w.ctype1, w.ctype2 = "PIXEL", "PIXEL"
    w.cunit1, w.cunit2 = "pixel", "pixel"
    model.meta.instrument.filter = lrs.FILTER
    model.meta.exposure.type = EXP_TYPE
    return model


def _photom(spec):
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
    _stamp(model, "photom", "Synthetic MIRI LRS photometric calibration", subarray=False)
    model.meta.photometry.pixelarea_steradians = lrs.pixel_area_sr()
    model.meta.photometry.pixelarea_arcsecsq = lrs.PIXEL_SCALE**2
    model.meta.exposure.type = EXP_TYPE
    return model


def _area(spec):
    return _detector(spec).area(_shape(), "Synthetic MIRI pixel area map: no distortion, all ones",
                                pixel_scale=lrs.PIXEL_SCALE,
                                meta={"instrument.filter": lrs.FILTER})


class _JsonReference(TreeReference):
    """A JSON reference file (EXTRACT1D): CRDS metadata at the top, then the content."""

    def validate(self) -> None:
        for key in ("reftype", "instrument", "useafter", "pedigree", "author", "description"):
            if not self.tree.get(key):
                raise ValueError(f"a JSON reference needs {key!r}")

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.tree, indent=2) + "\n")


def _extract1d(spec):
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


def _apcorr(spec):
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
    _stamp(model, "apcorr", "Synthetic MIRI LRS aperture corrections for a Gaussian PSF", subarray=False)
    model.meta.exposure.type = EXP_TYPE
    model.sizeunit = "pixels"
    return model


def _psf(spec):
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
    _stamp(model, "psf", "Synthetic MIRI LRS spectral PSF: Gaussian", subarray=False)
    model.meta.instrument.filter = lrs.FILTER
    model.meta.exposure.type = EXP_TYPE
    return model


def write_lrs_reference_files(
    ref_dir: str | Path, spec: LrsSpec | None = None, *, reftypes: Iterable[str] = ALL_TYPES
) -> dict[str, list[Path]]:
    """Write the MIRI LRS references; return {reftype: [paths]} for `build_crds_cache`."""
    spec = spec or LrsSpec()
    return write_mode_references(
        ref_dir, spec, _detector(spec),
        {"rscd": _rscd, "dark": _dark, "reset": _reset, "distortion": _distortion,
         "filteroffset": _filteroffset, "specwcs": _specwcs, "flat": _flat,
         "pathloss": _pathloss, "photom": _photom, "area": _area, "extract1d": _extract1d,
         "apcorr": _apcorr, "psf": _psf},
        reftypes, what="MIRI", stem=f"miri_{lrs.DETECTOR.lower()}_full")
