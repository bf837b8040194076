"""Where each exposure of the NIRCam imaging visit points: the dither
pattern, the true attitude, and the one a PLANNED pointing's header reports
(off by `planned_pointing_error`, for tweakreg to find)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calstream.steps.synthetic.attitude import solve_attitude
from calstream.steps.synthetic.imaging_spec import ProgramSpec
from calstream.steps.synthetic.nircam_detectors import PIXEL_SCALE, pixel_to_v2v3, subarray_for
from calstream.steps.synthetic.visit import POINTING_PLANNED


def dither_offset(position: int) -> tuple[float, float]:
    """Ideal-frame offset (arcsec) of the target at a dither position (1-based).

    A 4-point pattern with sub-pixel phases, small enough that a SUB160
    field keeps most stars in common; further positions repeat it, shifted.
    """
    base = [(0.0, 0.0), (15.5, 12.25), (-10.25, 19.5), (5.75, -14.0)]
    cycle, point = divmod(position - 1, len(base))
    dx, dy = base[point]
    return ((dx + 3.5 * cycle) * PIXEL_SCALE, (dy + 2.5 * cycle) * PIXEL_SCALE)


def primary_aperture_reference(spec: ProgramSpec) -> tuple[str, float, float]:
    det = spec.detectors[0].upper()
    sub = subarray_for(det, spec.subarray)
    return det, sub.xstart - 1 + sub.xref, sub.ystart - 1 + sub.yref


def attitude_for_offset(spec: ProgramSpec, ideal_offset: tuple[float, float]) -> np.ndarray:
    """Attitude that puts the target at `ideal_offset` from the primary aperture's reference.

    PA_V3 stays fixed for the visit; solve the roll at the target so that V3 at
    V1 has that position angle.
    """
    det, xref, yref = primary_aperture_reference(spec)
    v2t, v3t = pixel_to_v2v3(
        det, xref + ideal_offset[0] / PIXEL_SCALE, yref + ideal_offset[1] / PIXEL_SCALE
    )
    return solve_attitude(spec, float(v2t), float(v3t))


@dataclass(frozen=True)
class Pointing:
    """Where an exposure looked (true) and what its header says (reported)."""

    exposure: int
    offset: tuple[float, float]  # ideal arcsec, dither offset of the target
    true_attitude: np.ndarray
    reported_attitude: np.ndarray
    quality: str


def exposure_pointing(spec: ProgramSpec, exposure: int) -> Pointing:
    dx, dy = dither_offset(exposure)
    offset = (dx + spec.pointing_offset[0], dy + spec.pointing_offset[1])
    true_att = attitude_for_offset(spec, offset)
    quality = spec.pointing_quality(exposure)
    if quality == POINTING_PLANNED:
        err = spec.planned_pointing_error
        reported = attitude_for_offset(spec, (offset[0] + err[0], offset[1] + err[1]))
    else:
        reported = true_att
    return Pointing(exposure, offset, true_att, reported, quality)
