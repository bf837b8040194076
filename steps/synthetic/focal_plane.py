"""Where pixels sit in the focal plane: subarrays, and the SIAF's linear
pixel -> ideal -> V2/V3 mapping every synthetic mode uses.

The mapping is linear (no optical distortion) because that is exactly what
the synthetic DISTORTION references hold (`reference_models.linear_distortion`),
so the WCS the pipeline builds matches the pixels the scene was drawn on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Subarray:
    name: str
    xstart: int  # 1-based, science frame
    ystart: int
    xsize: int
    ysize: int
    fastaxis: int
    slowaxis: int
    noutputs: int

    @property
    def xref(self) -> float:
        """SIAF reference pixel of the aperture (1-based, subarray frame)."""
        return (self.xsize + 1) / 2

    @property
    def yref(self) -> float:
        return (self.ysize + 1) / 2

    @property
    def frame_time(self) -> float:
        # Each row costs 12 extra pixel clocks, each frame one (full) or two (subarray)
        # extra rows, at 10 us per pixel.
        extra_rows = 1 if self.name == "FULL" else 2
        return round((self.xsize / self.noutputs + 12) * (self.ysize + extra_rows) * 1e-5, 5)


def ideal_to_v2v3(xi, yi, v2v3_ref: tuple[float, float], v3_idl_yangle: float, vparity: int):
    """Ideal frame (arcsec from an aperture's reference point) to V2, V3 (arcsec), SIAF linear."""
    a = math.radians(v3_idl_yangle)
    v2 = v2v3_ref[0] + vparity * xi * math.cos(a) + yi * math.sin(a)
    v3 = v2v3_ref[1] - vparity * xi * math.sin(a) + yi * math.cos(a)
    return v2, v3


def v2v3_to_ideal(v2, v3, v2v3_ref: tuple[float, float], v3_idl_yangle: float, vparity: int):
    """Inverse of `ideal_to_v2v3`."""
    a = math.radians(v3_idl_yangle)
    dv2 = np.asarray(v2, dtype=float) - v2v3_ref[0]
    dv3 = np.asarray(v3, dtype=float) - v2v3_ref[1]
    xi = vparity * (dv2 * math.cos(a) - dv3 * math.sin(a))
    yi = dv2 * math.sin(a) + dv3 * math.cos(a)
    return xi, yi


@dataclass(frozen=True)
class LinearAperture:
    """A pixel frame mapped linearly onto the sky: pixel (`xref`, `yref`), 1-based,
    sits at (`v2_ref`, `v3_ref`) arcsec; `pixel_scale` arcsec per pixel."""

    pixel_scale: float
    xref: float
    yref: float
    v2_ref: float
    v3_ref: float
    v3_idl_yangle: float
    vparity: int = -1

    def pixel_to_v2v3(self, x, y):
        xi = self.pixel_scale * (np.asarray(x, dtype=float) - self.xref)
        yi = self.pixel_scale * (np.asarray(y, dtype=float) - self.yref)
        return ideal_to_v2v3(xi, yi, (self.v2_ref, self.v3_ref), self.v3_idl_yangle, self.vparity)

    def v2v3_to_pixel(self, v2, v3):
        xi, yi = v2v3_to_ideal(v2, v3, (self.v2_ref, self.v3_ref), self.v3_idl_yangle,
                               self.vparity)
        return xi / self.pixel_scale + self.xref, yi / self.pixel_scale + self.yref


def border_reference_pixels(sub: Subarray, full_size: int, border: int) -> np.ndarray:
    """True where `sub` holds reference pixels: a full frame's `border`-pixel edge."""
    xs = np.arange(sub.xstart, sub.xstart + sub.xsize)
    ys = np.arange(sub.ystart, sub.ystart + sub.ysize)
    edge_x = (xs <= border) | (xs > full_size - border)
    edge_y = (ys <= border) | (ys > full_size - border)
    return edge_y[:, None] | edge_x[None, :]
