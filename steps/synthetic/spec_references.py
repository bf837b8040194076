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
  for optimal extraction): the last five in `lrs_extraction_references`.

Full-frame MIRI files: the dark and reset cubes are the big ones (the dark
holds only as many groups as the spec reads).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import lrs_extraction_references as extraction
from calstream.steps.synthetic import spectroscopy as lrs
from calstream.steps.synthetic.detector_references import DetectorReferences, write_mode_references
from calstream.steps.synthetic.lrs_extraction_references import EXP_TYPE, stamp_lrs
from calstream.steps.synthetic.reference_models import (
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


def lrs_detector(spec: LrsSpec | None = None) -> DetectorReferences:
    return DetectorReferences("MIRI", lrs.DETECTOR, lrs.FULL_FRAME, lrs.reference_pixel_mask(),
                              label="MIRI ",
                              mask_description="Synthetic MIRI bad pixel mask: reference columns only",
                              linearity_coeffs=2)


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
    stamp_lrs(model, "rscd", "Synthetic MIRI RSCD: initial groups to skip", subarray=False)
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
    stamp_lrs(model, "dark", "Synthetic MIRI dark: constant dark rate")
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
    stamp_lrs(model, "reset", "Synthetic MIRI reset anomaly: none simulated")
    model.meta.exposure.ngroups = 2
    model.meta.exposure.nints = 1
    model.meta.exposure.readpatt = spec.readpatt
    return model


def _distortion(spec):
    # The same mapping as spectroscopy.pixel_to_v2v3.
    return lrs_detector(spec).distortion(
        (lrs.FULL_XREF - 1, lrs.FULL_YREF - 1), lrs.PIXEL_SCALE, lrs.IMAGER,
        "Synthetic MIRI imager distortion: linear",
        meta={"exposure.p_exptype":
              "MIR_IMAGE|MIR_TACQ|MIR_TACONFIRM|MIR_LRS-FIXEDSLIT|MIR_LRS-SLITLESS|"})


def _filteroffset(spec):
    return lrs_detector(spec).filteroffset(
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
    stamp_lrs(model, "specwcs", "Synthetic MIRI LRS dispersion and trace")
    model.meta.instrument.filter = lrs.FILTER
    model.meta.exposure.type = EXP_TYPE
    return model


def _flat(spec):
    return lrs_detector(spec).flat(
        lrs.detector_flat(spec), "Synthetic MIRI LRS flat: the simulated pixel response",
        flag_reference_pixels=False,
        meta={"instrument.filter": lrs.FILTER, "exposure.type": EXP_TYPE})


def _area(spec):
    return lrs_detector(spec).area(_shape(), "Synthetic MIRI pixel area map: no distortion, all ones",
                                pixel_scale=lrs.PIXEL_SCALE,
                                meta={"instrument.filter": lrs.FILTER})


def write_lrs_reference_files(
    ref_dir: str | Path, spec: LrsSpec | None = None, *, reftypes: Iterable[str] = ALL_TYPES
) -> dict[str, list[Path]]:
    """Write the MIRI LRS references; return {reftype: [paths]} for `build_crds_cache`."""
    spec = spec or LrsSpec()
    return write_mode_references(
        ref_dir, spec, lrs_detector(spec),
        {"rscd": _rscd, "dark": _dark, "reset": _reset, "distortion": _distortion,
         "filteroffset": _filteroffset, "specwcs": _specwcs, "flat": _flat,
         "pathloss": extraction.pathloss, "photom": extraction.photom, "area": _area,
         "extract1d": extraction.extract1d, "apcorr": extraction.apcorr, "psf": extraction.psf},
        reftypes, what="MIRI", stem=f"miri_{lrs.DETECTOR.lower()}_full")
