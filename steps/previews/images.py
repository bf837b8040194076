"""Image products as astronomers look at them: zscale limits (percentiles when
zscale cannot decide), an asinh stretch, pixels flagged DO_NOT_USE masked.

North is not turned up: the preview shows the detector (or the i2d's) pixel
grid with row 0 at the bottom, as ds9 does.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.io import fits
from astropy.visualization import AsinhStretch, PercentileInterval, ZScaleInterval

DO_NOT_USE = 1  # jwst DQ bit 0: the pixel is not to be used
MASKED_RGB = (90, 20, 60)  # masked pixels: dark purple, not mistaken for sky
PREVIEW_MAX = 1024  # longest side of a preview, in pixels
PREVIEW_MIN = 256  # small subarrays are enlarged (nearest neighbour) up to this
THUMB_SIDE = 128  # longest side of a thumbnail


def read_image(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(data, mask): the science plane, the median over integrations for a cube
    (calints, rateints), and which pixels to mask."""
    with fits.open(path, memmap=False) as hdus:
        names = [h.name for h in hdus]
        sci = hdus["SCI"].data if "SCI" in names else hdus[0].data
        if sci is None:
            raise ValueError(f"{path}: no image data")
        data = np.asarray(sci, dtype=np.float64)
        dq = np.asarray(hdus["DQ"].data) if "DQ" in names and hdus["DQ"].data is not None \
            else None
        weight = np.asarray(hdus["WHT"].data) if "WHT" in names and hdus["WHT"].data is not None \
            else None
    if data.ndim == 3:
        data = np.nanmedian(data, axis=0) if data.shape[0] > 1 else data[0]
        if dq is not None and dq.ndim == 3:
            dq = np.bitwise_and.reduce(dq, axis=0)  # masked when no integration is usable
    if data.ndim != 2:
        raise ValueError(f"{path}: a {data.ndim}-d science array is not an image")
    mask = ~np.isfinite(data)
    if dq is not None and dq.shape == data.shape:
        mask |= (dq & DO_NOT_USE).astype(bool)
    if weight is not None and weight.shape == data.shape:
        mask |= weight <= 0  # i2d: outside every input
    return data, mask


def limits(data: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    good = data[~mask]
    if good.size == 0:
        return 0.0, 1.0
    low, high = ZScaleInterval().get_limits(good)
    if not high > low:
        low, high = PercentileInterval(99.5).get_limits(good)
    if not high > low:
        low, high = float(good.min()), float(good.min()) + 1.0
    return float(low), float(high)


def to_rgb(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    low, high = limits(data, mask)
    scaled = np.clip((np.where(mask, low, data) - low) / (high - low), 0.0, 1.0)
    grey = (AsinhStretch(a=0.1)(scaled, clip=True) * 255).round().astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[mask] = MASKED_RGB
    return rgb[::-1]  # row 0 at the bottom


def _bin(data: np.ndarray, mask: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of factor x factor blocks, masked pixels left out."""
    h, w = (data.shape[0] // factor) * factor, (data.shape[1] // factor) * factor
    blocks = np.where(mask, np.nan, data)[:h, :w].reshape(h // factor, factor, w // factor, factor)
    with np.errstate(all="ignore"):
        count = np.isfinite(blocks).sum(axis=(1, 3))
        binned = np.nansum(blocks, axis=(1, 3)) / np.maximum(count, 1)
    return binned, count == 0


def resample(rgb: np.ndarray, longest: int) -> np.ndarray:
    """Nearest-neighbour resampling to ``longest`` pixels on the longer side."""
    h, w = rgb.shape[:2]
    scale = longest / max(h, w)
    out_h, out_w = max(1, round(h * scale)), max(1, round(w * scale))
    rows = (np.arange(out_h) * h / out_h).astype(int)
    cols = (np.arange(out_w) * w / out_w).astype(int)
    return rgb[rows][:, cols]


def preview_rgb(data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(preview, thumbnail) as RGB arrays."""
    longest = max(data.shape)
    if longest > PREVIEW_MAX:
        data, mask = _bin(data, mask, math.ceil(longest / PREVIEW_MAX))
    rgb = to_rgb(data, mask)
    preview = rgb
    if longest < PREVIEW_MIN:
        factor = PREVIEW_MIN // longest
        preview = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    return preview, resample(rgb, THUMB_SIDE)
